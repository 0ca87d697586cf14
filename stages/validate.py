"""validate: the service's rules, in one table, applied to a clip exactly as it would be uploaded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from pipeline.clip import Clip, Fact, SpeechMap
from pipeline.errors import PipelineError, service_error
from pipeline.limits import MAX_DURATION_S, MAX_FILE_BYTES, MIN_RUN_S, MIN_SAMPLE_RATE_HZ, MIN_SPEECH_S
from pipeline.registry import register
from pipeline.stage import option


def format_ok(container: str, codec: str, bit_depth: int | None) -> bool:
    """WAV 16-bit PCM, MP3, or M4A/AAC: the only formats the service accepts."""
    if container == "wav":
        return codec == "pcm_s16le" and bit_depth == 16
    if container == "mp3":
        return codec == "mp3"
    if container == "mp4":
        return codec == "aac"
    return False


def _format_message(m: dict[str, Any]) -> str:
    depth = f" {m['bit_depth']}-bit" if m.get("bit_depth") else ""
    return f"{m['container'].upper()}{depth} {m['codec']} is not accepted (only WAV 16-bit PCM, MP3, M4A/AAC)"


@dataclass(frozen=True)
class Rule:
    """One of the service's rules: the code it answers when ``fails(metrics)`` is true."""

    code: str
    fails: Callable[[dict[str, Any]], bool]
    message: Callable[[dict[str, Any]], str]
    hint: str | None = None  # None: the code's default hint


def rules(max_duration_s: float, min_speech_s: float, min_run_s: float) -> tuple[Rule, ...]:
    """The service's rules in the order they are reported (the first failing one is the verdict)."""
    return (
        Rule(
            "BadRequest.UnsupportedFileFormat",
            lambda m: not format_ok(m["container"], m["codec"], m["bit_depth"]),
            _format_message,
            "convert it with `voiceprep run`, which writes 16-bit PCM WAV",
        ),
        Rule(
            "Audio.FileSizeExceed",
            lambda m: m["size_bytes"] > MAX_FILE_BYTES,
            lambda m: f"file is {m['size_bytes'] / 1e6:.1f} MB, over the 10 MB limit",
        ),
        Rule(
            "Audio.AudioRateError",
            lambda m: m["sample_rate"] < MIN_SAMPLE_RATE_HZ,
            lambda m: f"sample rate {m['sample_rate']} Hz is under 16 kHz",
            "record again at 16 kHz or more; upsampling cannot restore lost bandwidth, "
            "though `voiceprep run` with `allow_upsample: true` does it with a warning",
        ),
        Rule(
            "InternalError",
            lambda m: m["duration_s"] > max_duration_s,
            lambda m: (
                f"audio is {m['duration_s']:.1f} s long; the service fails over {max_duration_s:.0f} s "
                '("audio preprocess server error")'
            ),
            "cut a 10-20 s clip of clean speech; `voiceprep run` picks the best one",
        ),
        Rule(
            "Audio.AudioSilentError",
            lambda m: m["speech_s"] <= min_speech_s,
            lambda m: (
                f"only {m['speech_s']:.1f} s of speech on the first channel; more than {min_speech_s:.0f} s needed"
            ),
        ),
        Rule(
            "Audio.AudioShortError",
            lambda m: m["longest_speech_s"] <= min_run_s,
            lambda m: (
                f"longest continuous speech is {m['longest_speech_s']:.1f} s; one stretch over {min_run_s:.0f} s needed"
            ),
        ),
    )


@register
@dataclass(frozen=True)
class Validate:
    """Judge the clip as the service would (format, size, rate, length, speech on channel 1).

    Raises the service's own codes: BadRequest.UnsupportedFileFormat, Audio.FileSizeExceed,
    Audio.AudioRateError, InternalError (too long), Audio.AudioSilentError, Audio.AudioShortError.
    The measurements are added to the clip's metrics and carried by the error too; the speech
    found on the first channel becomes the clip's speech map.
    """

    name: ClassVar[str] = "validate"
    changes_audio: ClassVar[bool] = False
    judges_upload: ClassVar[bool] = True  # a chain without a stage applying the service's rules is refused
    needs: ClassVar[frozenset[Fact]] = frozenset()
    provides: ClassVar[frozenset[Fact]] = frozenset({"speech"})

    # The service's own limits bound these: a looser value would pass what the service refuses.
    max_duration_s: float = option(
        MAX_DURATION_S, "longest audio the service accepts (seconds)", above=0.0, max=MAX_DURATION_S
    )
    min_speech_s: float = option(
        MIN_SPEECH_S, "speech must total MORE than this (seconds)", min=MIN_SPEECH_S, max=MAX_DURATION_S
    )
    min_run_s: float = option(
        MIN_RUN_S, "one continuous speech run must be LONGER than this (seconds)", min=MIN_RUN_S, max=MAX_DURATION_S
    )
    merge_gap_s: float = option(
        0.5, "pauses shorter than this join speech into one continuous run (seconds)", min=0.0, max=2.0
    )
    vad_threshold: float = option(
        0.5, "Silero speech probability that starts a speech segment (0-1)", above=0.0, max=0.99
    )

    def __post_init__(self) -> None:
        if self.min_run_s >= self.min_speech_s:
            raise ValueError("min_run_s must be less than min_speech_s")

    def measure(self, clip: Clip) -> tuple[dict[str, Any], SpeechMap]:
        """Everything the rules look at (the source's facts and speech on the first channel), and
        that speech; for a long input held only in part, its whole-source measures."""
        from pipeline import speech

        src = clip.source
        if clip.whole is not None:
            report = clip.whole.speech
            peak = clip.whole.peak
        else:
            report = speech.detect(
                clip.samples[0], clip.sample_rate, threshold=self.vad_threshold, merge_gap_s=self.merge_gap_s
            )
            peak = float(np.max(np.abs(clip.samples[0]))) if clip.frames else 0.0
        metrics: dict[str, Any] = {
            "container": src.container,
            "codec": src.codec,
            "bit_depth": src.bit_depth,
            "channels": src.channels,
            "sample_rate": src.sample_rate,
            "duration_s": round(src.duration_s, 3),
            "size_bytes": src.size_bytes,
            "peak_dbfs": round(20 * np.log10(peak), 2) if peak > 0 else None,
        }
        metrics.update(report.metrics())
        metrics["segments"] = [[round(a, 3), round(b, 3)] for a, b in report.segments]
        return metrics, SpeechMap(
            segments=metrics["segments"], runs=report.runs, duration_s=report.duration_s, probs=report.probs
        )

    def __call__(self, clip: Clip) -> Clip:
        measured, found = self.measure(clip)
        metrics = {**clip.metrics, **measured}
        failures = [r for r in rules(self.max_duration_s, self.min_speech_s, self.min_run_s) if r.fails(metrics)]
        metrics["failures"] = [r.code for r in failures]
        if failures:
            first = failures[0]
            err: PipelineError = service_error(
                first.code, first.message(metrics), hint=first.hint, metrics=metrics, speech=found
            )
            raise err
        return clip.replace(metrics=metrics, speech=found)
