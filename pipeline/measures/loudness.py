"""Loudness measures (one K-weighting): integrated and short-term loudness (LUFS), spread (LU), true peak (dBTP)."""

from __future__ import annotations

import functools
import math

import numpy as np

from pipeline.dsp import sosfilt

from .frames import frame_mask, power_db

# BS.1770's K-weighting as the analog filters its 48 kHz coefficient tables were made from (the
# parameters libebur128 derives them with): a high shelf (corner Hz, gain dB, Q, the exponent of
# its mid-band gain) and a high-pass (corner Hz, Q), each mapped to any rate by the bilinear
# transform with the corner pre-warped. At 48 kHz they are the standard's Tables 1 and 2.
SHELF_HZ = 1681.974450955533
SHELF_GAIN_DB = 3.999843853973347
SHELF_Q = 0.7071752369554196
SHELF_MID_EXPONENT = 0.4996667741545416
HIGH_PASS_HZ = 38.13547087602444
HIGH_PASS_Q = 0.5003270373238773
BLOCK_S = 0.4  # gating block (BS.1770-4), every quarter block
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
OVERSAMPLE = 4  # true-peak oversampling factor


@functools.lru_cache(maxsize=16)
def k_weighting(rate: int) -> np.ndarray:
    """BS.1770's K-weighting at ``rate`` (Hz) as second-order sections ``[b0 b1 b2 1 a1 a2]``
    (the shelf, then the high-pass); the standard's own coefficients at 48 kHz."""
    k = math.tan(math.pi * SHELF_HZ / rate)
    high = 10 ** (SHELF_GAIN_DB / 20)
    mid = high**SHELF_MID_EXPONENT
    a0 = 1 + k / SHELF_Q + k * k
    shelf = [
        (high + mid * k / SHELF_Q + k * k) / a0,
        2 * (k * k - high) / a0,
        (high - mid * k / SHELF_Q + k * k) / a0,
        1.0,
        2 * (k * k - 1) / a0,
        (1 - k / SHELF_Q + k * k) / a0,
    ]
    k = math.tan(math.pi * HIGH_PASS_HZ / rate)
    a0 = 1 + k / HIGH_PASS_Q + k * k
    high_pass = [1.0, -2.0, 1.0, 1.0, 2 * (k * k - 1) / a0, (1 - k / HIGH_PASS_Q + k * k) / a0]
    return np.array([shelf, high_pass])


def integrated_lufs(x: np.ndarray, rate: int) -> float:
    """BS.1770-4 gated integrated loudness of mono ``x``; -inf for silence or < 0.4 s.

    The measurement pyloudnorm's ``Meter(rate, filter_class="DeMan").integrated_loudness``
    makes (the same K-weighting, 400 ms blocks every 100 ms with its block bounds, absolute gate
    at -70 LUFS, relative gate 10 LU under the absolutely gated loudness), with numpy filtering:
    pyloudnorm imports scipy.signal (docs/design.md).
    """
    n = len(x)
    if n < int(BLOCK_S * rate) + 1:
        return float("-inf")
    y, _ = sosfilt(k_weighting(rate), np.asarray(x, dtype=np.float64))
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


def _sos_response(sos: np.ndarray, freqs_hz: np.ndarray, sample_rate: int) -> np.ndarray:
    """Complex frequency response of second-order sections ``[b0 b1 b2 a0 a1 a2]`` (numpy only)."""
    z = np.exp(-1j * 2 * np.pi * freqs_hz / sample_rate)
    h = np.ones_like(z)
    for b0, b1, b2, a0, a1, a2 in sos:
        h *= (b0 + b1 * z + b2 * z * z) / (a0 + a1 * z + a2 * z * z)
    return h


@functools.lru_cache(maxsize=16)
def _k_power_weights(block: int, sample_rate: int) -> np.ndarray:
    """Per rfft bin of a ``block``-sample frame: |H_K|^2 times the one-sided Parseval factor / block,
    so ``|rfft(frame)|^2 @ weights`` is the K-weighted mean-square energy of the frame."""
    freqs = np.fft.rfftfreq(block, 1 / sample_rate)
    w = np.abs(_sos_response(k_weighting(sample_rate), freqs, sample_rate)) ** 2
    w[1 : (block + 1) // 2] *= 2.0
    return w / (block * block)


def short_term_loudness(
    x: np.ndarray, sample_rate: int, *, window_s: float = 1.0, hop_s: float = 0.25
) -> tuple[np.ndarray, float]:
    """K-weighted loudness (LUFS) of ``window_s`` windows every ``hop_s``, and the hop in seconds.

    The signal is cut into blocks of gcd(window, hop) (whole milliseconds, rounded to whole
    samples: the window and the hop are whole numbers of blocks at any rate); each block's K-weighted energy is
    read off its spectrum (Parseval, with |H_K|^2 of ``k_weighting``, the filters ``integrated_lufs``
    runs) and a window sums its blocks. Filter tails across block edges are ignored: within 0.2 LU
    of time-domain filtering on speech, at a fraction of the cost of filtering the whole signal.
    """
    win_ms, hop_ms = int(round(window_s * 1000)), int(round(hop_s * 1000))
    if not 0 < hop_ms <= win_ms:
        raise ValueError("need 1 ms <= hop_s <= window_s")
    step_ms = math.gcd(win_ms, hop_ms)
    block = max(1, int(round(step_ms * sample_rate / 1000)))
    per_win, per_hop = win_ms // step_ms, hop_ms // step_ms
    hop = per_hop * block
    if len(x) < per_win * block:
        return np.zeros(0), hop / sample_rate
    nb = len(x) // block
    spec = np.fft.rfft(np.asarray(x[: nb * block], dtype=np.float32).reshape(nb, block), axis=1)
    energy = (spec.real**2 + spec.imag**2) @ _k_power_weights(block, sample_rate).astype(np.float32)
    c = np.concatenate(([0.0], np.cumsum(energy, dtype=np.float64)))
    starts = np.arange(0, nb - per_win + 1, per_hop)
    ms = (c[starts + per_win] - c[starts]) / per_win
    return -0.691 + power_db(ms), hop / sample_rate


def loudness_spread(
    x: np.ndarray, sample_rate: int, segments: np.ndarray, *, window_s: float = 1.0, hop_s: float = 0.25,
    min_speech_share: float = 0.7,
) -> tuple[float, float]:
    """Spread (LU, 95th minus 10th percentile) of short-term loudness over windows that are mostly
    speech, and the trend (LU per 10 s, least squares) of those loudness values."""
    lk, hop = short_term_loudness(x, sample_rate, window_s=window_s, hop_s=hop_s)
    if len(lk) == 0:
        return 0.0, 0.0
    fine = frame_mask(int(np.ceil(len(x) / (0.01 * sample_rate))), 0.01, 0.01, segments).astype(np.float64)
    c = np.concatenate(([0.0], np.cumsum(fine)))
    lo = np.round(np.arange(len(lk)) * hop / 0.01).astype(int)
    hi = np.minimum(lo + int(round(window_s / 0.01)), len(fine))
    share = (c[hi] - c[lo]) / np.maximum(hi - lo, 1)
    keep = share >= min_speech_share
    if keep.sum() < 3:
        return 0.0, 0.0
    v = lk[keep]
    t = (np.arange(len(lk)) * hop)[keep]
    spread = float(np.percentile(v, 95) - np.percentile(v, 10))
    slope = float(np.polyfit(t, v, 1)[0]) * 10.0 if np.ptp(t) > 0 else 0.0
    return spread, slope


def oversampled_peaks(x: np.ndarray) -> np.ndarray:
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


def peak_dbtp(peak: float) -> float:
    """A linear peak in dB (full scale 1); -inf for silence."""
    return float(20 * np.log10(peak)) if peak > 0 else float("-inf")


def true_peak_dbtp(x: np.ndarray) -> float:
    """True peak (dBTP) with 4x oversampling, as BS.1770 Annex 2 (soxr's interpolator)."""
    if len(x) == 0:
        return float("-inf")
    return peak_dbtp(float(np.max(oversampled_peaks(x))))

