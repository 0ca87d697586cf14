"""Clip: immutable audio samples, the source's facts, and the typed facts stages share."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

# The facts a stage can need or provide: the names of the Clip fields below that hold them.
Fact = Literal["speech", "cut", "encoded"]
FACTS: tuple[Fact, ...] = ("speech", "cut", "encoded")
FACT_NAMES: dict[Fact, str] = {
    "speech": "the speech map",
    "cut": "the chosen cut",
    "encoded": "the encoded WAV",
}


@dataclass(frozen=True)
class SourceInfo:
    """Facts about the file a clip came from, as the service would see it."""

    path: str
    container: str  # wav, rf64, mp3, mp4, webm, flac, ogg, aiff, ...
    codec: str  # pcm_s16le, pcm_s24le, pcm_f32le, pcm_mulaw, mp3, aac, flac, vorbis, opus, ...
    bit_depth: int | None  # bits per sample for PCM/float, None for lossy codecs
    channels: int
    sample_rate: int
    duration_s: float
    size_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ClipWarning:
    """A non-fatal finding with a stable snake_case code and a plain hint."""

    code: str
    message: str
    hint: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "hint": self.hint}


def _segments(a: Any) -> np.ndarray:
    """``(n, 2)`` float64 seconds, read-only (a copy: the caller's array is left as it was)."""
    arr = np.array(a if a is not None else [], dtype=np.float64).reshape(-1, 2)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class SpeechMap:
    """Speech in one time line: ``segments`` and continuous ``runs`` (pauses under the merge gap
    joined), both ``(n, 2)`` arrays of seconds, over ``duration_s``; ``probs`` holds the VAD's
    speech probability per 32 ms frame when it was detected on this audio (empty otherwise)."""

    segments: np.ndarray
    runs: np.ndarray
    duration_s: float
    probs: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", _segments(self.segments))
        object.__setattr__(self, "runs", _segments(self.runs))

    @property
    def speech_s(self) -> float:
        return float(np.sum(self.segments[:, 1] - self.segments[:, 0])) if len(self.segments) else 0.0

    @property
    def longest_speech_s(self) -> float:
        return float(np.max(self.runs[:, 1] - self.runs[:, 0])) if len(self.runs) else 0.0

    @property
    def longest_pause_s(self) -> float:
        if len(self.segments) < 2:
            return 0.0
        return float(np.max(self.segments[1:, 0] - self.segments[:-1, 1]))

    def metrics(self) -> dict[str, Any]:
        """The speech measures the service's rules read (seconds), rounded for the report."""
        lead = float(self.segments[0, 0]) if len(self.segments) else self.duration_s
        tail = float(self.duration_s - self.segments[-1, 1]) if len(self.segments) else self.duration_s
        return {
            "speech_s": round(self.speech_s, 3),
            "longest_speech_s": round(self.longest_speech_s, 3),
            "longest_pause_s": round(self.longest_pause_s, 3),
            "speech_segments": len(self.segments),
            "leading_silence_s": round(max(lead, 0.0), 3),
            "trailing_silence_s": round(max(tail, 0.0), 3),
        }


@dataclass(frozen=True)
class Cut:
    """Where a clip was cut from its input: ``start_s``-``end_s`` in the input's seconds, made of
    ``pieces`` (input intervals joined with crossfades; the gaps between them are shortened
    pauses), with what it holds (speech, longest run and pause in seconds, level spread between
    speech segments in dB, and ``strict_run_s``: the longest run when only the shorter pauses of
    the stage's strict reading join speech). ``score`` ranks the cuts of one input (the stage that made it says
    whether it qualifies). ``input_speech`` is the speech found in the input (input seconds;
    over ``input_speech.duration_s`` from where the examined stretch started)."""

    start_s: float
    end_s: float
    pieces: tuple[tuple[float, float], ...]
    score: float
    speech_s: float
    longest_run_s: float
    longest_pause_s: float
    level_spread_db: float
    pauses_shortened: int
    input_speech: SpeechMap
    strict_run_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"start_s": self.start_s, "end_s": self.end_s}


@dataclass(frozen=True)
class WholeSource:
    """Measures of a whole source made while it streamed past, for a clip that holds only the
    source's first minutes (long inputs are judged without being held): its speech and its peak."""

    speech: SpeechMap
    peak: float


def _freeze(samples: np.ndarray) -> np.ndarray:
    arr = np.asarray(samples, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[np.newaxis, :]
    if arr.ndim != 2:
        raise ValueError(f"samples must be (channels, frames), got shape {arr.shape}")
    if arr.flags.writeable:
        arr = arr.copy() if arr.base is not None and not arr.flags.owndata else arr
        arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Clip:
    """Audio as float32 ``(channels, frames)`` at ``sample_rate`` Hz, and what is known about it.

    ``offset_s`` is where ``samples`` start in the source's time line (a clip cut from a long
    recording keeps its place). The typed facts stages share: ``speech`` (the speech map, in this
    clip's seconds), ``cut`` (where the clip was cut from its input), ``whole`` (whole-source
    measures of a long input held only in part), ``encoded`` (the 16-bit WAV file's bytes once
    the audio is final). ``metrics`` holds the measurements for the report (seconds, dB, LUFS),
    merged by ``measured``; ``warnings`` the findings so far. Samples are read-only: stages return
    a new clip via ``replace``.
    """

    samples: np.ndarray
    sample_rate: int
    source: SourceInfo
    offset_s: float = 0.0
    speech: SpeechMap | None = None
    cut: Cut | None = None
    whole: WholeSource | None = None
    encoded: bytes | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[ClipWarning, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples", _freeze(self.samples))
        object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))
        if self.sample_rate <= 0:
            raise ValueError("sample_rate must be positive")

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def frames(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate

    def replace(self, **changes: Any) -> Clip:
        """A new clip with the given fields changed."""
        return dataclasses.replace(self, **changes)

    def measured(self, **values: Any) -> Clip:
        """A new clip whose ``metrics`` have these entries added or replaced."""
        return dataclasses.replace(self, metrics={**self.metrics, **values})

    def warn(self, code: str, message: str, hint: str = "") -> Clip:
        """A new clip carrying one more warning (a repeated code replaces the older one)."""
        kept = tuple(w for w in self.warnings if w.code != code)
        return dataclasses.replace(self, warnings=(*kept, ClipWarning(code, message, hint)))

    def has(self, fact: Fact) -> bool:
        """Whether the fact named ``fact`` is known for this clip."""
        return getattr(self, fact) is not None

    def __getstate__(self) -> dict[str, Any]:
        state = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        state["samples"] = np.array(self.samples)
        state["metrics"] = dict(self.metrics)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)
        self.__post_init__()
