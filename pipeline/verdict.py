"""Verdict: the service's answer on one file, with every measured value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Verdict:
    """The verdict on one file: ``ok``, or the service's ``code`` with a message and a hint.

    ``metrics`` holds every measured value (seconds, Hz, bytes, LUFS, dB); ``warnings`` are
    ``{code, message, hint}`` findings that do not refuse the file.
    """

    path: str
    ok: bool
    code: str | None = None
    message: str = ""
    hint: str = ""
    stage: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    warnings: list[dict[str, str]] = field(default_factory=list)
    plot: dict[str, Any] | None = None  # what the report page draws, when asked for

    def line(self) -> str:
        """``PATH: CODE: message (hint)`` for a refusal, ``PATH: ok`` otherwise."""
        if self.ok:
            return f"{self.path}: ok"
        tail = f" ({self.hint})" if self.hint else ""
        return f"{self.path}: {self.code}: {self.message}{tail}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "stage": self.stage,
            "warnings": list(self.warnings),
            "metrics": dict(self.metrics),
            **({"plot": self.plot} if self.plot is not None else {}),
        }
