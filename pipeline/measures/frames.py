"""Framing helpers the measures share: mono, analysis rate, speech segments, frames, decibels."""

from __future__ import annotations

from typing import Any

import numpy as np

ANALYSIS_RATE = 16000  # everything but clipping, DC and bandwidth is measured at 16 kHz
EPS = 1e-12


def as_mono(x: np.ndarray) -> np.ndarray:
    """The first channel (the one the service uses) of ``(channels, frames)`` or 1-D samples, float64."""
    arr = np.asarray(x)
    if arr.ndim == 2:
        arr = arr[0]
    return np.asarray(arr, dtype=np.float64)


def to_rate(x: np.ndarray, sample_rate: int, rate: int = ANALYSIS_RATE) -> np.ndarray:
    """Mono ``x`` resampled to ``rate`` (soxr), float64."""
    if sample_rate == rate or len(x) == 0:
        return np.asarray(x, dtype=np.float64)
    import soxr

    return np.asarray(soxr.resample(np.asarray(x, dtype=np.float32), sample_rate, rate, quality="HQ"), dtype=np.float64)


def as_segments(segments: Any) -> np.ndarray:
    """Speech segments as a float ``(n, 2)`` array in seconds."""
    return np.asarray(segments if segments is not None else [], dtype=np.float64).reshape(-1, 2)


def frame_mask(n_frames: int, hop_s: float, frame_s: float, segments: np.ndarray, guard_s: float = 0.0) -> np.ndarray:
    """Per frame: True when the frame lies inside a speech segment (widened by ``guard_s``)."""
    centres = np.arange(n_frames) * hop_s + frame_s / 2
    mask = np.zeros(n_frames, dtype=bool)
    for a, b in segments:
        mask |= (centres >= a - guard_s) & (centres < b + guard_s)
    return mask


def frames_of(x: np.ndarray, frame: int, hop: int) -> np.ndarray:
    """A strided ``(n, frame)`` view of ``x`` (no copy); empty when ``x`` is shorter than a frame."""
    if len(x) < frame:
        return np.zeros((0, frame), dtype=x.dtype)
    return np.lib.stride_tricks.sliding_window_view(x, frame)[::hop]


def power_db(p: float | np.ndarray) -> Any:
    """Power ``p`` in dB (floored at ``EPS``, -120 dB)."""
    return 10.0 * np.log10(np.maximum(p, EPS))


def runs(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of the runs of True in 1-D ``b``."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], b.astype(np.int8), [0]))))
    return edges[::2], edges[1::2] - edges[::2]
