"""FileResult (one JSON Lines object per input) and the human summary."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any, Literal


@dataclass
class FileResult:
    """The outcome for one input file; ``as_dict`` is its line in the JSONL report."""

    input: str
    status: Literal["ok", "rejected"]
    output: str | None = None
    code: str | None = None
    message: str = ""
    hint: str = ""
    warnings: list[dict[str, str]] = field(default_factory=list)
    segment: dict[str, float] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    stage: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        out = {
            "input": self.input,
            "status": self.status,
            "output": self.output,
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "stage": self.stage,
            "warnings": list(self.warnings),
            "segment": self.segment,
            "metrics": dict(self.metrics),
        }
        out.update(self.extra)
        return out

    def line(self) -> str:
        if self.ok:
            return f"{self.input}: ok -> {self.output}"
        tail = f" ({self.hint})" if self.hint else ""
        return f"{self.input}: {self.code}: {self.message}{tail}"


def write_line(fh: IO[str], result: FileResult) -> None:
    """Append one JSON line and flush, so a crash later in the batch keeps it."""
    fh.write(json.dumps(result.as_dict(), ensure_ascii=False, default=str) + "\n")
    fh.flush()


def summary(results: Iterable[FileResult]) -> str:
    """`N ok, M refused (code x k, ...); warnings: code x k`."""
    results = list(results)
    ok = sum(r.ok for r in results)
    refused = Counter(r.code or "?" for r in results if not r.ok)
    warned = Counter(w["code"] for r in results for w in r.warnings)
    text = f"{ok} ok, {len(results) - ok} refused"
    if refused:
        text += " (" + ", ".join(f"{c} x{n}" for c, n in refused.most_common()) + ")"
    if warned:
        text += "; warnings: " + ", ".join(f"{c} x{n}" for c, n in warned.most_common())
    return text
