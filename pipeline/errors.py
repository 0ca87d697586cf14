"""Errors: one type for expected failures, carrying the service's code and a hint."""

from __future__ import annotations

from typing import Any


class VoiceprepError(Exception):
    """Base class of every expected voiceprep failure."""


class ConfigError(VoiceprepError):
    """A pipeline.yaml or CLI option is wrong; raised before any audio is read (exit code 2).

    ``source`` is the file (with ``:line:column`` when known), ``path`` where in the document
    the wrong value sits (keys and list indexes, e.g. ``("run", 3, "loudness", "target_lufs")``).
    """

    def __init__(self, message: str, *, source: str | None = None, path: tuple[str | int, ...] = ()) -> None:
        self.message = message
        self.source = source
        self.path = path
        super().__init__(f"{source}: {message}" if source else message)


class PipelineError(VoiceprepError):
    """An audio file the service would refuse, or one voiceprep cannot repair.

    ``code`` is the service's own code (``Audio.AudioSilentError`` ...), ``hint`` a plain fix a
    person can act on. The runner stamps ``stage`` and ``source`` on the way out.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        hint: str = "",
        stage: str | None = None,
        source: str | None = None,
        http_status: int | None = None,
        metrics: dict[str, Any] | None = None,
        speech: Any = None,
    ) -> None:
        self.code = code
        self.message = message
        self.hint = hint
        self.stage = stage
        self.source = source
        self.http_status = http_status
        self.metrics: dict[str, Any] = dict(metrics or {})
        self.speech = speech  # the SpeechMap found before refusing (input time), for the report's plot
        super().__init__(self.line())

    def line(self) -> str:
        """One line: ``PATH: CODE: message (hint)``."""
        head = f"{self.source}: " if self.source else ""
        tail = f" ({self.hint})" if self.hint else ""
        return f"{head}{self.code}: {self.message}{tail}"

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across worker processes
        return (
            _rebuild_pipeline_error,
            (self.code, self.message, self.hint, self.stage, self.source, self.http_status, self.metrics),
        )


def _rebuild_pipeline_error(
    code: str,
    message: str,
    hint: str,
    stage: str | None,
    source: str | None,
    http_status: int | None,
    metrics: dict[str, Any],
) -> PipelineError:
    return PipelineError(code, message, hint=hint, stage=stage, source=source, http_status=http_status, metrics=metrics)


# The service's refusal codes, verbatim, with the HTTP status it answers them with and a default hint.
SERVICE_CODES: dict[str, tuple[int, str]] = {
    "BadRequest.UnsupportedFileFormat": (
        400,
        "only WAV 16-bit PCM, MP3 and M4A/AAC are accepted; `voiceprep run` converts to 16-bit WAV",
    ),
    "Audio.DecoderError": (400, "the file is damaged or not audio; export it again from the recorder"),
    "Audio.FileSizeExceed": (400, "files over 10 MB are refused; `voiceprep run` cuts a 10-20 s clip"),
    "Audio.AudioRateError": (400, "record at 16 kHz or more (44.1 or 48 kHz is best)"),
    "Audio.AudioSilentError": (
        400,
        "the service needs more than 10 s of speech; read a passage aloud for 20-30 s, close to the microphone",
    ),
    "Audio.AudioShortError": (
        400,
        "the service needs at least one stretch of more than 5 s of continuous speech; read full sentences without stopping",
    ),
    "InternalError": (
        500,
        "the service fails on long, noisy or fluctuating audio; `voiceprep run` cuts the best 10-20 s",
    ),
}


def service_error(code: str, message: str, *, hint: str | None = None, **kw: Any) -> PipelineError:
    """A PipelineError for one of the service's codes, with its default hint unless one is given."""
    status, default_hint = SERVICE_CODES.get(code, (400, ""))
    return PipelineError(code, message, hint=default_hint if hint is None else hint, http_status=status, **kw)
