"""loudness: BS.1770 integrated loudness to a target, then a true-peak limiter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from pipeline.clip import Clip, Fact
from pipeline.dsp import moving_max, moving_mean
from pipeline.measures.loudness import integrated_lufs, oversampled_peaks, peak_dbtp, true_peak_dbtp
from pipeline.registry import register
from pipeline.stage import option


def _reduction(peaks: np.ndarray, rate: int, ceiling: float, hold_s: float) -> np.ndarray | None:
    """The smooth gain reduction (0-1 per sample) that brings ``peaks`` (per-sample oversampled
    peaks) under ``ceiling``, or None when none is needed.

    The needed reduction is held for ``hold_s`` and averaged over half that, so the gain falls
    before each peak and recovers after it without clicks.
    """
    need = 1.0 - np.minimum(1.0, ceiling / np.maximum(peaks.astype(np.float64), 1e-12))
    if not np.any(need > 0):
        return None
    hold = max(int(hold_s * rate), 3)
    return moving_mean(moving_max(need, hold), max(hold // 2, 1))


def _gained_and_limited(
    x: np.ndarray, peaks: np.ndarray, gain: float, rate: int, ceiling_dbtp: float, hold_s: float
) -> tuple[np.ndarray, bool]:
    """``gain * x`` with its true peaks brought under the ceiling, from the oversampled ``peaks``
    of ``x`` (oversampling is linear: the gained signal's peaks are ``gain * peaks``, so no
    second oversampling is needed). Returns (audio, whether the limiter acted)."""
    red = _reduction(peaks * np.float32(gain), rate, 10 ** (ceiling_dbtp / 20), hold_s)
    if red is None:
        return (x * np.float32(gain)).astype(np.float32, copy=False), False
    return (x * (gain * (1.0 - red))).astype(np.float32), True


def _trim_to_ceiling(y: np.ndarray, ceiling_dbtp: float) -> tuple[np.ndarray, float, float]:
    """Measure the true peak of ``y``; a static trim catches what the limiter's smoothing left.
    Returns (audio, true peak dBTP, trim dB (<= 0))."""
    tp = true_peak_dbtp(y)
    if tp <= ceiling_dbtp:
        return y, tp, 0.0
    trim_db = ceiling_dbtp - tp - 0.01  # a static gain scales the oversampled peaks by exactly itself
    return (y * 10 ** (trim_db / 20)).astype(np.float32), tp + trim_db, trim_db


def limit_peak(x: np.ndarray, rate: int, ceiling_dbtp: float, hold_s: float = 0.01) -> tuple[np.ndarray, float]:
    """Bring true peaks under ``ceiling_dbtp`` with a smooth, look-ahead gain curve; returns the
    audio and its true peak (dBTP), measured on the way so callers need not oversample again."""
    if len(x) == 0:
        return x, float("-inf")
    peaks = oversampled_peaks(x)
    y, limited = _gained_and_limited(x, peaks, 1.0, rate, ceiling_dbtp, hold_s)
    if not limited:
        return x, peak_dbtp(float(np.max(peaks)))
    y, tp, _ = _trim_to_ceiling(y, ceiling_dbtp)
    return y, tp


def limit(x: np.ndarray, rate: int, ceiling_dbtp: float, hold_s: float = 0.01) -> np.ndarray:
    """``limit_peak`` without the peak: the limited audio."""
    return limit_peak(x, rate, ceiling_dbtp, hold_s)[0]


def normalize(
    x: np.ndarray, rate: int, target_lufs: float, ceiling_dbtp: float, max_gain_db: float, hold_s: float = 0.01
) -> tuple[np.ndarray, float, float, float]:
    """Gain to ``target_lufs`` then limit to ``ceiling_dbtp``; a few make-up rounds keep loudness on target.

    Every round applies its total gain and the limiter to the input itself (no limiting of
    limited audio), with the limiter driven by the input's oversampled peaks scaled by the gain:
    the input is oversampled once, the result once more to measure its true peak. Gain changes
    loudness by exactly its dB, so loudness is re-measured only when the limiter acted.
    Returns (audio, gain applied in dB, final LUFS, final dBTP).
    """
    before = integrated_lufs(x, rate)
    if not np.isfinite(before):
        return x, 0.0, before, true_peak_dbtp(x)
    x = np.asarray(x, dtype=np.float32)
    peaks = oversampled_peaks(x)
    total, now = 0.0, before
    y, limited = x, False
    for _ in range(4):
        step = float(np.clip(target_lufs - now, -60.0, max_gain_db - total))
        if abs(step) < 0.05:
            break
        total += step
        y, limited = _gained_and_limited(x, peaks, 10 ** (total / 20), rate, ceiling_dbtp, hold_s)
        # Untouched by the limiter, loudness moved by the gain, unless blocks crossed the -70 LUFS
        # absolute gate (very quiet input): measured again then.
        now = before + total if not limited and min(before, before + total) > -60.0 else integrated_lufs(y, rate)
    if total == 0.0:  # no gain was needed: still keep the peaks under the ceiling
        y, limited = _gained_and_limited(x, peaks, 1.0, rate, ceiling_dbtp, hold_s)
        if not limited:
            return x, 0.0, before, peak_dbtp(float(np.max(peaks)))
        now = integrated_lufs(y, rate)
    if not limited:  # a plain gain: the true peak is the input's, scaled
        return y, total, now, peak_dbtp(float(np.max(peaks)) * 10 ** (total / 20))
    y, tp, trim_db = _trim_to_ceiling(y, ceiling_dbtp)
    return y, total + trim_db, now + trim_db, tp


@register
@dataclass(frozen=True)
class Loudness:
    """Normalise to ``target_lufs`` (BS.1770 as pyloudnorm measures it), then limit true peaks to ``ceiling_dbtp``.

    Audio without speech is never amplified (the gain is 0 dB when the clip holds no speech).
    """

    name: ClassVar[str] = "loudness"
    changes_audio: ClassVar[bool] = True
    needs: ClassVar[frozenset[Fact]] = frozenset()
    provides: ClassVar[frozenset[Fact]] = frozenset()

    target_lufs: float = option(-20.0, "integrated loudness target (LUFS)", min=-40.0, max=-5.0)
    ceiling_dbtp: float = option(-1.5, "true-peak ceiling after limiting (dBTP, 4x oversampled)", min=-12.0, max=0.0)
    max_gain_db: float = option(35.0, "never raise the level by more than this (dB)", min=0.0, max=60.0)

    def __call__(self, clip: Clip) -> Clip:
        x = clip.samples[0]
        has_speech = clip.speech is None or len(clip.speech.segments) > 0
        if not has_speech:
            lufs, tp = integrated_lufs(x, clip.sample_rate), true_peak_dbtp(x)
            y, gain = x, 0.0
        else:
            y, gain, lufs, tp = normalize(x, clip.sample_rate, self.target_lufs, self.ceiling_dbtp, self.max_gain_db)
        return clip.replace(samples=np.asarray(y, dtype=np.float32)[np.newaxis, :]).measured(
            loudness_lufs=round(lufs, 2) if np.isfinite(lufs) else None,
            true_peak_dbtp=round(tp, 2) if np.isfinite(tp) else None,
            gain_db=round(gain, 2),
        )
