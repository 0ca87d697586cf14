"""The coarse waveform a report page draws: peak level per bin, 0-255, from samples or blocks."""

from __future__ import annotations

import numpy as np

MAX_BINS = 600  # enough for a plot across a wide screen; 600 bytes a take before encoding
FULL_SCALE = 255
# samples taken at a time: the temporaries stay small and reused (touching fresh memory for a
# whole long input's temporaries cost more than the reduction itself)
BLOCK_FRAMES = 1 << 16


def bin_count(frames: int, max_bins: int = MAX_BINS) -> int:
    """Bins for ``frames`` samples: ``max_bins``, or one per sample for very short signals."""
    return max(0, min(int(frames), int(max_bins)))


def envelope(samples: np.ndarray, max_bins: int = MAX_BINS) -> list[int]:
    """Peak ``|sample|`` of float audio (full scale 1.0; mono, or ``(channels, frames)`` with the
    peak taken over every channel) in each of at most ``max_bins`` equal bins, scaled so that 255
    is full scale; the bins split the signal's duration evenly."""
    builder = EnvelopeBuilder(np.shape(samples)[-1], max_bins)
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
        """Take the next samples (mono, or ``(channels, frames)``); samples past ``frames`` fall in
        the last bin. NaN samples count as silence, infinite ones as full scale."""
        x = np.asarray(block)
        x = x.reshape(1, -1) if x.ndim < 2 else x
        for at in range(0, x.shape[-1], BLOCK_FRAMES):
            self._add(x[:, at : at + BLOCK_FRAMES])

    def _add(self, block: np.ndarray) -> None:
        start, n = self.seen, block.shape[-1]
        self.seen += n
        if not n or not self.bins:
            return
        # row by row: decoders hand over interleaved channels, across which a reduction is slow
        peak = np.abs(block[0].astype(np.float32, copy=False))
        for row in block[1:]:
            np.fmax(peak, np.abs(row), out=peak)
        # sample p lies in bin floor(p * bins / frames) (the last bin takes any excess), so bin k
        # starts at ceil(k * frames / bins): the block is reduced bin by bin in one pass
        first, last = self._bin(start), self._bin(start + n - 1)
        later = np.arange(first + 1, last + 1, dtype=np.int64)
        cuts = np.concatenate(([0], -(-later * max(self.frames, 1) // self.bins) - start))
        peaks = np.nan_to_num(np.fmax.reduceat(peak, cuts), nan=0.0)
        np.fmax(self.peaks[first : last + 1], peaks, out=self.peaks[first : last + 1])

    def _bin(self, position: int) -> int:
        return min(position * self.bins // max(self.frames, 1), self.bins - 1)

    def values(self) -> list[int]:
        """The envelope so far as integers 0-255."""
        scaled = np.round(np.clip(self.peaks, 0.0, 1.0) * FULL_SCALE)
        return [int(v) for v in scaled]
