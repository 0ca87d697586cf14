"""The coarse waveform a report page draws: peak level per bin, 0-255, from samples or blocks."""

from __future__ import annotations

import numpy as np

MAX_BINS = 600  # enough for a plot across a wide screen; 600 bytes a take before encoding
FULL_SCALE = 255


def bin_count(frames: int, max_bins: int = MAX_BINS) -> int:
    """Bins for ``frames`` samples: ``max_bins``, or one per sample for very short signals."""
    return max(0, min(int(frames), int(max_bins)))


def envelope(samples: np.ndarray, max_bins: int = MAX_BINS) -> list[int]:
    """Peak ``|sample|`` of mono float audio (full scale 1.0) in each of at most ``max_bins``
    equal bins, scaled so that 255 is full scale; the bins split the signal's duration evenly."""
    builder = EnvelopeBuilder(len(samples), max_bins)
    builder.add(samples)
    return builder.values()


class EnvelopeBuilder:
    """``envelope`` over a signal that arrives in blocks (of known total length ``frames``):
    memory stays at one value per bin however long the input."""

    def __init__(self, frames: int, max_bins: int = MAX_BINS) -> None:
        self.frames = int(frames)
        self.bins = bin_count(frames, max_bins)
        self.peaks = np.zeros(self.bins, dtype=np.float32)
        self.seen = 0

    def add(self, block: np.ndarray) -> None:
        """Take the next samples (mono float); samples past ``frames`` fall in the last bin."""
        x = np.abs(np.nan_to_num(np.asarray(block, dtype=np.float32).reshape(-1), nan=0.0, posinf=1.0, neginf=1.0))
        if not len(x) or not self.bins:
            self.seen += len(x)
            return
        # bin of each sample: floor(position * bins / frames), the last bin also taking any excess
        pos = np.arange(self.seen, self.seen + len(x), dtype=np.int64)
        idx = np.minimum(pos * self.bins // max(self.frames, 1), self.bins - 1)
        starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
        np.maximum.at(self.peaks, idx[starts], np.maximum.reduceat(x, starts))
        self.seen += len(x)

    def values(self) -> list[int]:
        """The envelope so far as integers 0-255."""
        scaled = np.round(np.clip(self.peaks, 0.0, 1.0) * FULL_SCALE)
        return [int(v) for v in scaled]
