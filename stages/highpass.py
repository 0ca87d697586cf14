"""highpass: remove DC offset and rumble with a gentle zero-phase high-pass filter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from pipeline.clip import Clip, Fact
from pipeline.dsp import butter_highpass, sosfiltfilt
from pipeline.registry import register
from pipeline.stage import option


def highpass(x: np.ndarray, sample_rate: int, cutoff_hz: float, order: int = 2) -> np.ndarray:
    """Subtract the mean, then a Butterworth high-pass run forwards and backwards (no phase shift)."""
    y = x - x.mean(axis=-1, keepdims=True)
    if cutoff_hz <= 0 or y.shape[-1] < 64:
        return y.astype(np.float32)
    return sosfiltfilt(butter_highpass(order, cutoff_hz, sample_rate), y).astype(np.float32)


@register
@dataclass(frozen=True)
class Highpass:
    """Remove DC offset and low-frequency rumble (below ``cutoff_hz``; 0 = DC removal only)."""

    name: ClassVar[str] = "highpass"
    changes_audio: ClassVar[bool] = True
    needs: ClassVar[frozenset[Fact]] = frozenset()
    provides: ClassVar[frozenset[Fact]] = frozenset()

    cutoff_hz: float = option(60.0, "high-pass corner frequency (Hz); 0 removes only the DC offset", min=0.0, max=300.0)
    order: int = option(2, "filter order (gentle: 2 = 12 dB/octave, doubled by the zero-phase pass)", min=1, max=8)

    def __call__(self, clip: Clip) -> Clip:
        dc = float(np.mean(clip.samples))
        out = highpass(clip.samples, clip.sample_rate, self.cutoff_hz, self.order)
        return clip.replace(samples=out).measured(dc_offset_removed=round(dc, 6))
