"""Clip: immutable audio samples plus the source's facts and the measurements made so far."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np


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
    """Audio as float32 ``(channels, frames)`` at ``sample_rate`` Hz.

    ``offset_s`` is where ``samples`` start in the source's time line (a clip cut from a long
    recording keeps its place). ``info`` holds measurements in seconds, dB, LUFS; ``warnings``
    the findings so far. Samples are read-only: stages return a new clip via ``replace``.
    """

    samples: np.ndarray
    sample_rate: int
    source: SourceInfo
    info: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[ClipWarning, ...] = ()
    offset_s: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples", _freeze(self.samples))
        object.__setattr__(self, "info", MappingProxyType(dict(self.info)))
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

    def with_info(self, **values: Any) -> Clip:
        """A new clip whose ``info`` has these entries added or replaced."""
        merged = dict(self.info)
        merged.update(values)
        return dataclasses.replace(self, info=merged)

    def warn(self, code: str, message: str, hint: str = "") -> Clip:
        """A new clip carrying one more warning (a repeated code replaces the older one)."""
        kept = tuple(w for w in self.warnings if w.code != code)
        return dataclasses.replace(self, warnings=(*kept, ClipWarning(code, message, hint)))

    def __getstate__(self) -> dict[str, Any]:
        return {
            "samples": np.array(self.samples),
            "sample_rate": self.sample_rate,
            "source": self.source,
            "info": dict(self.info),
            "warnings": self.warnings,
            "offset_s": self.offset_s,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)
        self.__post_init__()
