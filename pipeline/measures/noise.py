"""Noise measures: speech-to-noise ratio (dB; a quick one and one that holds without pauses), clipping, DC offset."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .frames import ANALYSIS_RATE, EPS, frame_mask, frames_of, power_db

SNR_FRAME_S = 0.02


def snr_estimate(
    x: np.ndarray, sample_rate: int, segments: np.ndarray, *, min_pause_s: float = 1.0, guard_s: float = 0.05
) -> tuple[float, str]:
    """Quick speech-to-noise ratio (dB) and how it was found (ranks window candidates and guards
    the repairs; the verdict uses :func:`snr`).

    ``"pauses"``: noise power is the median power of the 20 ms frames outside speech (each pause
    shrunk by ``guard_s``), signal power the mean power of speech frames less that noise. With under
    ``min_pause_s`` of pauses, ``"percentile"``: the noise is the quietest 10 % of 20 ms frames.
    """
    frame = max(1, int(round(SNR_FRAME_S * sample_rate)))
    fr = frames_of(x, frame, frame)
    if len(fr) == 0:
        return 0.0, "none"
    p = np.mean(fr * fr, axis=1)
    hop_s = frame / sample_rate
    speech = frame_mask(len(p), hop_s, hop_s, segments)
    pause = ~frame_mask(len(p), hop_s, hop_s, segments, guard_s=guard_s)
    if not speech.any():
        return 0.0, "none"
    ps = float(np.mean(p[speech]))
    if pause.sum() * hop_s >= min_pause_s:
        pn = float(np.median(p[pause]))  # the median: robust to breaths and speech edges the VAD left out
        method = "pauses"
    else:
        q = np.sort(p)
        pn = float(np.mean(q[: max(1, len(q) // 10)]))
        method = "percentile"
    return float(power_db(max(ps - pn, EPS)) - power_db(pn)) if pn > 0 else 120.0, method


def clipping(x: np.ndarray, *, tolerance: float = 1e-3, min_run: int = 2) -> tuple[float, int]:
    """Share of samples on flat tops at the peak level, and the longest such run (samples).

    A sample is "clipped" when ``|x| >= (1 - tolerance) * peak`` and it belongs to a run of at
    least ``min_run`` such samples (a natural peak is a single sample; a clipped one is flat).
    """
    a = np.abs(x)
    peak = float(a.max()) if len(a) else 0.0
    if peak <= 0:
        return 0.0, 0
    hit = a >= (1.0 - tolerance) * peak
    edges = np.flatnonzero(np.diff(np.concatenate(([0], hit.astype(np.int8), [0]))))
    runs = edges[1::2] - edges[::2]
    runs = runs[runs >= min_run]
    if runs.size == 0:
        return 0.0, 0
    return float(runs.sum()) / len(x), int(runs.max())


def dc_offset(x: np.ndarray) -> float:
    """Mean of the samples (full scale = 1)."""
    return float(np.mean(x)) if len(x) else 0.0


# ---- SNR that holds when the VAD hears noise as speech -------------------------------------------

FLOOR_FRAME = 512  # 32 ms Hann frames, hop 16 ms
FLOOR_HOP = 256
FLOOR_SMOOTH = 3  # frames averaged before the percentile (64 ms)
FLOOR_BANDS = 24  # log-spaced from FLOOR_LOW_HZ up (bands under one bin wide are merged)
FLOOR_LOW_HZ = 50.0
FLOOR_PERCENTILE = 10.0
NOISY_FLOOR_DB = 20.0  # under this floor SNR, WADA may lower the estimate ...
HARMONIC_HNR_DB = 15.0  # ... unless the voice is this harmonic (noise at 0-5 dB fills the gaps between harmonics)
WADA_BIAS_DB = 1.0  # WADA's median overestimate at 0-10 dB SNR, speech throughout (0.6-1.2 leaving out each noise in turn)
HNR_FRAME = 640  # 40 ms: two periods of a 50 Hz voice, every 20 ms
HNR_HOP = 320
HNR_LAGS = (40, 320)  # pitch 400 Hz down to 50 Hz

WADA_SNR_DB = tuple(float(v) for v in range(-10, 61))
WADA_G = (  # G of Gamma(0.4) speech + Gaussian noise at WADA_SNR_DB[0], +1 dB, ... (simulated, 1e6 samples)
    0.41150, 0.41281, 0.41399, 0.41628, 0.41917, 0.42363, 0.42796, 0.43390,
    0.44153, 0.45037, 0.46078, 0.47321, 0.48761, 0.50411, 0.52289, 0.54312,
    0.56509, 0.58818, 0.61333, 0.63971, 0.66669, 0.69431, 0.72314, 0.75300,
    0.78270, 0.81199, 0.84139, 0.87030, 0.89957, 0.92783, 0.95540, 0.98268,
    1.00937, 1.03531, 1.06045, 1.08507, 1.10833, 1.13121, 1.15317, 1.17384,
    1.19416, 1.21324, 1.23174, 1.24980, 1.26698, 1.28363, 1.29950, 1.31457,
    1.32929, 1.34334, 1.35683, 1.36970, 1.38203, 1.39382, 1.40525, 1.41606,
    1.42633, 1.43610, 1.44551, 1.45444, 1.46285, 1.47096, 1.47884, 1.48622,
    1.49316, 1.50005, 1.50662, 1.51271, 1.51873, 1.52433, 1.52976,
)


@dataclass(frozen=True)
class SnrEstimate:
    """Speech-to-noise ratio (dB) and its parts: the per-band noise-floor estimate, WADA-SNR, the
    voice's harmonics-to-noise ratio (dB), and which estimate gave the value (``"floor"`` or ``"wada"``)."""

    snr_db: float
    floor_db: float
    wada_db: float
    hnr_db: float
    method: str


@functools.lru_cache(maxsize=1)
def _band_matrix() -> np.ndarray:
    """(bins, bands) 0/1 matrix summing rfft bins into log-spaced bands, each at least one bin."""
    n_bins = FLOOR_FRAME // 2 + 1
    lo = max(1, int(round(FLOOR_LOW_HZ * FLOOR_FRAME / ANALYSIS_RATE)))
    idx = sorted(set(np.round(np.geomspace(lo, n_bins, FLOOR_BANDS + 1)).astype(int).tolist()))
    m = np.zeros((n_bins, len(idx) - 1))
    for b in range(len(idx) - 1):
        m[idx[b] : idx[b + 1], b] = 1.0
    m.setflags(write=False)
    return m


def band_power(x16: np.ndarray) -> np.ndarray:
    """Mean-square power per 32 ms Hann frame (hop 16 ms) and band of mono 16 kHz audio; a
    frame's bands sum to its power (Parseval, the window's energy taken out)."""
    m = _band_matrix()
    x = np.asarray(x16, dtype=np.float64)
    fr = frames_of(x, FLOOR_FRAME, FLOOR_HOP)
    if len(fr) == 0:
        return np.zeros((0, m.shape[1]))
    win = np.hanning(FLOOR_FRAME)
    spec = np.abs(np.fft.rfft(fr * win, axis=1)) ** 2
    spec[:, 1:-1] *= 2.0
    return np.asarray((spec / (FLOOR_FRAME * float(np.sum(win * win)))) @ m)


def _smooth(p: np.ndarray) -> np.ndarray:
    if len(p) < FLOOR_SMOOTH:
        return p
    c = np.cumsum(np.vstack([np.zeros((1, p.shape[1])), p]), axis=0)
    return np.asarray((c[FLOOR_SMOOTH:] - c[:-FLOOR_SMOOTH]) / FLOOR_SMOOTH)


FLOOR_BIAS = (  # per band: mean over FLOOR_PERCENTILE-th percentile of steady Gaussian noise (percentile_bias())
    2.82191, 2.72636, 2.24431, 2.68047, 2.82840, 2.24918, 2.26581, 1.93298, 1.79824, 1.79795, 1.70334,
    1.63675, 1.52522, 1.47319, 1.41711, 1.35952, 1.32102, 1.28551, 1.25916, 1.22967, 1.19625, 1.17226,
)


def percentile_bias() -> np.ndarray:
    """Per band: mean over FLOOR_PERCENTILE-th percentile of the smoothed band power of steady
    Gaussian noise (60 s, fixed seed): turns the percentile into a mean for a steady noise. The
    source of ``FLOOR_BIAS`` (tests hold the constant to it)."""
    p = _smooth(band_power(np.random.default_rng(1234).standard_normal(ANALYSIS_RATE * 60)))
    return np.asarray(np.mean(p, axis=0) / np.maximum(np.percentile(p, FLOOR_PERCENTILE, axis=0), EPS))


def floor_snr(x16: np.ndarray, segments: np.ndarray) -> float:
    """SNR (dB) from each band's quiet moments, speech or not: a band's FLOOR_PERCENTILE-th
    percentile of 64 ms power, scaled as for steady noise, is its noise; speech power is the mean
    power of the frames inside ``segments`` (all frames when none). 120 when no noise is found."""
    p = band_power(x16)
    if len(p) == 0:
        return 0.0
    noise_power = float(np.sum(np.percentile(_smooth(p), FLOOR_PERCENTILE, axis=0) * np.asarray(FLOOR_BIAS)))
    total = p.sum(axis=1)
    inside = frame_mask(len(p), FLOOR_HOP / ANALYSIS_RATE, FLOOR_FRAME / ANALYSIS_RATE, segments)
    speech = float(np.mean(total[inside])) if inside.any() else float(np.mean(total))
    if noise_power <= EPS:
        return 120.0
    return float(power_db(max(speech - noise_power, EPS) / noise_power))


def wada_snr(x16: np.ndarray) -> float:
    """WADA-SNR (Kim and Stern, 2008; dB, -10 to 60): how far the amplitude distribution of the
    signal is from a Gaussian's (noise) toward a Gamma(0.4)'s (clean speech). Exact zeros (digital
    silence) are left out."""
    a = np.abs(np.asarray(x16, dtype=np.float64))
    a = a[a > 0]
    if len(a) == 0:
        return WADA_SNR_DB[-1]
    a = a / float(np.max(a))
    g = float(np.log(np.mean(a)) - np.mean(np.log(a)))
    return float(np.interp(g, WADA_G, WADA_SNR_DB))


@functools.lru_cache(maxsize=1)
def _hnr_window() -> tuple[np.ndarray, np.ndarray]:
    """Hann window and its own normalised autocorrelation (to undo the window's taper)."""
    w = np.hanning(HNR_FRAME)
    rw = np.fft.irfft(np.abs(np.fft.rfft(w, 1024)) ** 2, 1024)[:HNR_FRAME]
    out = w, rw / rw[0]
    for a in out:
        a.setflags(write=False)
    return out


def harmonicity_db(x16: np.ndarray, segments: np.ndarray) -> float:
    """Harmonics-to-noise ratio (dB) of the voice: per 40 ms frame the normalised autocorrelation
    peak r over pitch lags 50-400 Hz (window-corrected, Boersma 1993); the median of
    ``10 log10(r / (1 - r))`` over the more periodic half of the louder half of the speech frames."""
    x = np.asarray(x16, dtype=np.float64)
    fr = frames_of(x, HNR_FRAME, HNR_HOP)
    if len(fr) == 0:
        return 0.0
    fr = fr - fr.mean(axis=1, keepdims=True)
    w, rw = _hnr_window()
    spec = np.fft.rfft(fr * w, 1024, axis=1)  # 1024 >= frame + longest lag: no circular wrap
    r = np.fft.irfft(spec.real**2 + spec.imag**2, 1024, axis=1)[:, : HNR_LAGS[1] + 1]
    lo, hi = HNR_LAGS
    rn = np.clip((r[:, lo : hi + 1] / np.maximum(r[:, :1], EPS) / rw[lo : hi + 1]).max(axis=1), 0.0, 0.9999)
    energy = np.mean(fr * fr, axis=1)
    inside = frame_mask(len(rn), HNR_HOP / ANALYSIS_RATE, HNR_FRAME / ANALYSIS_RATE, segments)
    if inside.sum() < 10:
        inside[:] = True
    loud = inside & (energy >= np.median(energy[inside]))
    rr = np.sort(rn[loud])[::-1]
    rr = rr[: max(1, len(rr) // 2)]
    return float(np.median(10 * np.log10(rr / (1 - rr))))


def snr(x16: np.ndarray, segments: np.ndarray) -> SnrEstimate:
    """Speech-to-noise ratio of mono 16 kHz ``x16`` whose speech lies in ``segments`` (seconds),
    with or without pauses.

    The noise-floor estimate holds on steady noise but sees only the quiet moments of a noise
    whose level moves (babble, a cafe, animals). When it already says under NOISY_FLOOR_DB and the
    voice is not clearly harmonic (HNR under HARMONIC_HNR_DB), WADA-SNR less its bias is taken if
    lower: such noise makes the waveform's amplitudes Gaussian whatever its spectrum. The HNR gate
    keeps voices whose amplitudes are flat when clean (compressed sources) from reading as noisy.
    """
    floor = floor_snr(x16, segments)
    wada = wada_snr(x16)
    hnr = harmonicity_db(x16, segments) if floor < NOISY_FLOOR_DB else float("nan")
    if floor < NOISY_FLOOR_DB and wada - WADA_BIAS_DB < floor and hnr < HARMONIC_HNR_DB:
        return SnrEstimate(wada - WADA_BIAS_DB, floor, wada, hnr, "wada")
    return SnrEstimate(floor, floor, wada, hnr, "floor")
