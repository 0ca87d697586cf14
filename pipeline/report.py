"""FileResult (one JSON Lines object per input), paths shown safely, and the batch summary table."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any, Literal

_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(32), 127)}


def shown(text: str) -> str:
    """``text`` (a path, or a line holding one) printable on one UTF-8 line whatever a file name
    holds: bytes that are not UTF-8 (kept by Python as lone surrogates) and control characters
    are shown as ``\\xNN`` escapes (the real path is kept for reading; this is only for display)."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # surrogates that do not come from a file name
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace").translate(_CONTROLS)


@dataclass
class FileResult:
    """The outcome for one input file; ``as_dict`` is its line in the JSONL report.

    ``skipped``: the input, its configuration and voiceprep's version are unchanged since an
    earlier run made its verdict (kept as it was); ``run_id`` names the run that reports it.
    """

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
    run_id: str | None = None
    skipped: bool = False
    plot: dict[str, Any] | None = None  # what the report page draws (envelopes, speech, the cut)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        out = {
            "input": shown(self.input),
            "status": self.status,
            "output": shown(self.output) if self.output else None,
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "stage": self.stage,
            "warnings": list(self.warnings),
            "segment": self.segment,
            "metrics": dict(self.metrics),
            "run_id": self.run_id,
            "skipped": self.skipped,
        }
        if self.plot is not None:
            out["plot"] = self.plot
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileResult:
        """A result back from its report line (``extra`` keeps the keys this class does not name)."""
        known = {"input", "status", "output", "code", "message", "hint", "warnings", "segment", "metrics", "stage",
                 "run_id", "skipped", "plot"}
        return cls(
            input=data["input"],
            status=data["status"],
            output=data.get("output"),
            code=data.get("code"),
            message=data.get("message", ""),
            hint=data.get("hint", ""),
            warnings=list(data.get("warnings", [])),
            segment=data.get("segment"),
            metrics=dict(data.get("metrics", {})),
            stage=data.get("stage"),
            extra={k: v for k, v in data.items() if k not in known},
            run_id=data.get("run_id"),
            skipped=bool(data.get("skipped", False)),
            plot=data.get("plot"),
        )

    def json(self) -> str:
        return json.dumps(self.as_dict(), ensure_ascii=False, default=str)

    def line(self) -> str:
        tag = " (unchanged, skipped)" if self.skipped else ""
        if self.ok:
            return f"{shown(self.input)}: ok -> {shown(self.output or '')}{tag}"
        tail = f" ({self.hint})" if self.hint else ""
        return f"{shown(self.input)}: {self.code}: {self.message}{tail}{tag}"


def write_line(fh: IO[str], result: FileResult) -> None:
    """Append one JSON line and flush, so a crash later in the batch keeps it."""
    fh.write(result.json() + "\n")
    fh.flush()


@dataclass
class Summary:
    """Counts over a batch as its results arrive (nothing else is kept): by status and code,
    warnings, skipped inputs, audio seconds; ``table`` renders them with the wall time."""

    by_code: Counter[str] = field(default_factory=Counter)
    warnings: Counter[str] = field(default_factory=Counter)
    ok: int = 0
    refused: int = 0
    skipped: int = 0
    audio_s: float = 0.0

    def add(self, result: FileResult) -> None:
        if result.ok:
            self.ok += 1
        else:
            self.refused += 1
            self.by_code[result.code or "?"] += 1
        self.skipped += result.skipped
        self.warnings.update(w["code"] for w in result.warnings)
        if not result.skipped:
            seconds = result.metrics.get("input_duration_s")
            self.audio_s += float(seconds) if isinstance(seconds, (int, float)) else 0.0

    @property
    def total(self) -> int:
        return self.ok + self.refused

    def line(self) -> str:
        """`N ok, M refused (code x k, ...); warnings: code x k`."""
        text = f"{self.ok} ok, {self.refused} refused"
        if self.by_code:
            text += " (" + ", ".join(f"{c} x{n}" for c, n in self.by_code.most_common()) + ")"
        if self.warnings:
            text += "; warnings: " + ", ".join(f"{c} x{n}" for c, n in self.warnings.most_common())
        return text

    def table(self, wall_s: float) -> str:
        """The end-of-batch summary: a small aligned table."""
        rows: list[tuple[str, str]] = [("ok", str(self.ok)), ("refused", str(self.refused))]
        rows += [(f"  {code}", str(n)) for code, n in self.by_code.most_common()]
        if self.skipped:
            rows.append(("unchanged (skipped)", str(self.skipped)))
        rows += [(f"warning {code}", str(n)) for code, n in self.warnings.most_common()]
        rows.append(("audio processed", f"{self.audio_s:.1f} s"))
        rows.append(("wall time", f"{wall_s:.1f} s"))
        if wall_s > 0 and self.audio_s > 0:
            rows.append(("real-time factor", f"{self.audio_s / wall_s:.0f}x"))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def summary(results: list[FileResult]) -> str:
    """`N ok, M refused (code x k, ...); warnings: code x k` for a list of results."""
    s = Summary()
    for r in results:
        s.add(r)
    return s.line()
