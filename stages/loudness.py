"""loudness: BS.1770 integrated loudness to a target, then a true-peak limiter."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from pipeline.clip import Clip, Fact
from pipeline.dsp import moving_max, moving_mean, rbj_biquad, sosfilt
from pipeline.registry import register
from pipeline.stage import option

OVERSAMPLE = 4


# The K-weighting stages as pyloudnorm builds them (Audio EQ Cookbook shelf and high-pass, at any
# rate): kind, corner (Hz), Q, gain (dB). The reported loudness is pyloudnorm's, to 1e-6 LU.
K_WEIGHTING = (("high_shelf", 1500.0, 1 / np.sqrt(2), 4.0), ("high_pass", 38.0, 0.5, 0.0))
BLOCK_S = 0.4  # gating block (BS.1770-4), every quarter block
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0


@functools.lru_cache(maxsize=8)
def _k_sections(rate: int) -> np.ndarray:
    """K-weighting at ``rate`` as second-order sections (shelf, then high-pass)."""
    return np.stack([rbj_biquad(kind, fc, q, gain, rate) for kind, fc, q, gain in K_WEIGHTING])


def integrated_lufs(x: np.ndarray, rate: int) -> float:
    """BS.1770-4 gated integrated loudness of mono ``x``; -inf for silence or < 0.4 s.

    The measurement pyloudnorm's ``Meter(rate).integrated_loudness`` makes (same K-weighting
    filters, 400 ms blocks every 100 ms with its block bounds, absolute gate at -70 LUFS,
    relative gate 10 LU under the absolutely gated loudness), with numpy filtering: pyloudnorm
    imports scipy.signal, 0.75-1 s of every process's start.
    """
    n = len(x)
    if n < int(BLOCK_S * rate) + 1:
        return float("-inf")
    y, _ = sosfilt(_k_sections(rate), np.asarray(x, dtype=np.float64))
    count = int(np.round((n / rate - BLOCK_S) / (BLOCK_S * 0.25))) + 1
    j = np.arange(count)
    lo = (BLOCK_S * (j * 0.25) * rate).astype(np.int64)  # pyloudnorm's bounds, bit for bit
    hi = np.minimum((BLOCK_S * (j * 0.25 + 1) * rate).astype(np.int64), n)
    # the energy between consecutive bounds (one vectorised pass), then each block sums its pieces
    edges = np.unique(np.concatenate([lo, hi]))
    y *= y
    pieces = np.concatenate(([0.0], np.cumsum(np.add.reduceat(y[: edges[-1]], edges[:-1]))))
    z = (pieces[np.searchsorted(edges, hi)] - pieces[np.searchsorted(edges, lo)]) / (BLOCK_S * rate)
    with np.errstate(divide="ignore"):
        block_lufs = -0.691 + 10 * np.log10(z)
    above = block_lufs >= ABSOLUTE_GATE_LUFS
    if not np.any(above):
        return float("-inf")
    relative = -0.691 + 10 * np.log10(np.mean(z[above])) + RELATIVE_GATE_LU
    kept = (block_lufs > relative) & (block_lufs > ABSOLUTE_GATE_LUFS)
    if not np.any(kept):
        return float("-inf")
    return float(-0.691 + 10 * np.log10(np.mean(z[kept])))


def _oversampled_peaks(x: np.ndarray) -> np.ndarray:
    """Per input sample, the largest |x| among its 4 oversampled points (soxr, high quality):
    inter-sample peaks show. float32, one value per sample of ``x``."""
    import soxr

    x = np.asarray(x, dtype=np.float32)
    if len(x) < 16:
        return np.abs(x)
    up = soxr.resample(x, 1, OVERSAMPLE, quality="HQ")
    n = min(len(up) // OVERSAMPLE, len(x))
    a = np.abs(up[: n * OVERSAMPLE])
    peaks = a[0::OVERSAMPLE].copy()
    for k in range(1, OVERSAMPLE):  # strided maxima: far quicker than a max over rows of 4
        np.maximum(peaks, a[k::OVERSAMPLE], out=peaks)
    if n < len(x):  # soxr may return a few samples short: the tail keeps its plain peaks
        peaks = np.concatenate([peaks, np.abs(x[n:])])
    return np.maximum(peaks, np.abs(x))


def _dbtp(peak: float) -> float:
    """A linear peak in dB (full scale 1); -inf for silence."""
    return float(20 * np.log10(peak)) if peak > 0 else float("-inf")


def true_peak_dbtp(x: np.ndarray) -> float:
    """True peak (dBTP) with 4x oversampling, as BS.1770 Annex 2 (soxr's interpolator)."""
    if len(x) == 0:
        return float("-inf")
    return _dbtp(float(np.max(_oversampled_peaks(x))))


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
    peaks = _oversampled_peaks(x)
    y, limited = _gained_and_limited(x, peaks, 1.0, rate, ceiling_dbtp, hold_s)
    if not limited:
        return x, _dbtp(float(np.max(peaks)))
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
    peaks = _oversampled_peaks(x)
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
            return x, 0.0, before, _dbtp(float(np.max(peaks)))
        now = integrated_lufs(y, rate)
    if not limited:  # a plain gain: the true peak is the input's, scaled
        return y, total, now, _dbtp(float(np.max(peaks)) * 10 ** (total / 20))
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

    target_lufs: float = option(-20.0, "integrated loudness target (LUFS)")
    ceiling_dbtp: float = option(-1.5, "true-peak ceiling after limiting (dBTP, 4x oversampled)")
    max_gain_db: float = option(35.0, "never raise the level by more than this (dB)")

    def __post_init__(self) -> None:
        if not -40.0 <= self.target_lufs <= -5.0:
            raise ValueError("target_lufs must be between -40 and -5")
        if not -12.0 <= self.ceiling_dbtp <= 0.0:
            raise ValueError("ceiling_dbtp must be between -12 and 0")
        if self.max_gain_db < 0:
            raise ValueError("max_gain_db must be >= 0")

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
