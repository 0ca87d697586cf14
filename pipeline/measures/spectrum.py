"""Low-frequency and bandwidth measures: mains hum (a measured comb of lines), rumble (dB), effective bandwidth (Hz)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .frames import EPS, frame_mask, frames_of, power_db, to_rate

LOW_RATE = 1000  # rumble lives under 400 Hz: measured on a 1 kHz copy


Spectrum = tuple[np.ndarray, np.ndarray, np.ndarray]


def low_spectrum(x: np.ndarray, sample_rate: int, *, top_hz: float = 400.0) -> Spectrum:
    """Frequencies (1 Hz apart) up to ``top_hz``, and per bin the 20th percentile and the mean of
    the power spectra of 1 s Hann segments (half overlapping), DC removed."""
    y = to_rate(x - np.mean(x), sample_rate, LOW_RATE) if len(x) else x
    fr = frames_of(y, LOW_RATE, LOW_RATE // 2)
    if len(fr) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    top = int(top_hz) + 1
    win = np.hanning(LOW_RATE)
    spec = np.abs(np.fft.rfft(fr * win, axis=1)[:, :top]) ** 2
    norm = 2.0 / (LOW_RATE * float(np.sum(win**2)))  # one-sided PSD
    return np.arange(top, dtype=np.float64), np.percentile(spec, 20, axis=0) * norm, np.mean(spec, axis=0) * norm


def rumble_db(x: np.ndarray, sample_rate: int, *, below_hz: float = 60.0, spectrum: Spectrum | None = None) -> float:
    """Power under ``below_hz`` (wind, handling, traffic) relative to the whole signal, dB."""
    f, _, mean = spectrum if spectrum is not None else low_spectrum(x, sample_rate)
    if len(f) == 0:
        return -120.0
    band = (f >= 10.0) & (f < below_hz)
    return float(power_db(float(np.sum(mean[band])) / (float(np.var(x)) + EPS)))


def effective_bandwidth(x: np.ndarray, sample_rate: int, segments: np.ndarray, *, drop_db: float = 50.0) -> float:
    """Highest frequency (Hz) where the long-term speech spectrum is within ``drop_db`` of its peak.

    Audio recorded narrowband and resampled to a higher rate is empty above its old Nyquist
    frequency; real wideband speech keeps energy up to the top, 30-50 dB down.
    """
    n_fft = 1 << int(np.ceil(np.log2(0.032 * sample_rate)))
    fr = frames_of(x, n_fft, n_fft)
    if len(fr) == 0:
        return sample_rate / 2
    mask = frame_mask(len(fr), n_fft / sample_rate, n_fft / sample_rate, segments)
    if mask.sum() >= 4:
        fr = fr[mask]
    spec = np.mean(np.abs(np.fft.rfft(fr * np.hanning(n_fft), axis=1)) ** 2, axis=0)
    freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    # smooth over ~100 Hz bands
    width = max(1, int(round(100 / (freqs[1] - freqs[0]))))
    smooth = np.convolve(spec, np.ones(width) / width, mode="same")
    db = power_db(smooth)
    band = freqs >= 100
    peak = float(np.max(db[band]))
    above = np.flatnonzero(band & (db >= peak - drop_db))
    return float(freqs[above[-1]]) if above.size else 0.0


HUM_RATE = 4000  # lines up to 1.8 kHz are measured on a 4 kHz copy
HUM_SEGMENT_S = 2.0  # 0.5 Hz resolution; zero-padded HUM_PAD times for locating peaks
HUM_PAD = 4
HUM_KEEP_PERCENTILE = 20.0  # per bin over segments: steady lines stay, speech harmonics that move drop
HUM_F0_HZ = (45.0, 65.0)  # 50/60 Hz mains, off-nominal and mis-clocked recordings included
HUM_F0_STEP_HZ = 0.02
HUM_MAX_HARMONICS = 24
LINE_HALF_HZ = 0.4  # a line is the highest bin this close to where it is expected
LINE_FLOOR_HZ = (1.5, 6.0)  # its surroundings: bins this far on either side
MIN_LINE_DB = 6.0  # a harmonic this far over its surroundings is part of the hum (and is notched)
STRONG_LINE_DB = 10.0  # lines this far out make the reported level (a 6 dB bump can be a voice's harmonic)
MAINS_HZ = (50.0, 60.0)
LONE_LINE_HZ = 1.0  # a comb of one line is mains only this close to 50 or 60 Hz (a fan or a voice can sit anywhere)
HUM_MIN_S = 5.0  # under this (fewer than 4 segments) a moving voice can pass for a steady line
TINY = 1e-20  # PSD floor for logs: quiet bins of quiet recordings sit far under EPS


@dataclass(frozen=True)
class Hum:
    """Mains lines of one signal: the fundamental (Hz, None when no comb stands out), each
    harmonic's measured frequency (Hz), prominence over its surroundings (dB) and power above
    them (relative to the whole signal, dB)."""

    f0_hz: float | None
    freqs_hz: np.ndarray
    prominence_db: np.ndarray
    power_db: np.ndarray

    def level_db(self, min_prominence_db: float = STRONG_LINE_DB) -> float:
        """Power of the lines standing ``min_prominence_db`` or more out, relative to the signal (dB; -120 for none)."""
        sel = self.prominence_db >= min_prominence_db
        if self.f0_hz is None or not sel.any():
            return -120.0
        return float(10 * np.log10(max(float(np.sum(10 ** (self.power_db[sel] / 10))), 1e-12)))

    @property
    def lines_hz(self) -> np.ndarray:
        """Frequencies (Hz) of the harmonics that stand ``MIN_LINE_DB`` over their surroundings."""
        return np.asarray(self.freqs_hz[self.prominence_db >= MIN_LINE_DB])

    @property
    def peak_prominence_db(self) -> float:
        """Prominence (dB) of the strongest line; 0 when there is none."""
        return float(np.max(self.prominence_db)) if len(self.prominence_db) else 0.0


def steady_spectrum(x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Frequencies (Hz), the per-bin ``HUM_KEEP_PERCENTILE``-th percentile of the power spectra
    of ``HUM_SEGMENT_S`` Hann segments of a 4 kHz copy (half overlapping, zero-padded, one-sided
    PSD), and the signal's power. Signals shorter than one segment use one segment of what there is."""
    x = np.asarray(x, dtype=np.float64)
    x = x - np.mean(x) if len(x) else x
    power = float(np.mean(x * x)) if len(x) else 0.0
    y = to_rate(x, sample_rate, HUM_RATE)
    seg = min(int(HUM_SEGMENT_S * HUM_RATE), len(y))
    if seg < HUM_RATE // 4:
        return np.zeros(0), np.zeros(0), power
    fr = frames_of(y, seg, seg // 2)
    win = np.hanning(seg)
    n_fft = HUM_PAD * seg
    spec = np.abs(np.fft.rfft(fr * win, n=n_fft, axis=1)) ** 2 * (2.0 / (HUM_RATE * float(np.sum(win * win))))
    spec = np.sort(spec, axis=0)  # few segments: a sort down the columns is the cheap percentile
    pos = (len(spec) - 1) * HUM_KEEP_PERCENTILE / 100.0
    lo = int(np.floor(pos))
    keep = spec[lo] + (spec[min(lo + 1, len(spec) - 1)] - spec[lo]) * (pos - lo)
    return np.fft.rfftfreq(n_fft, 1.0 / HUM_RATE), keep, power


def _lines_at(freqs: np.ndarray, psd: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each expected line frequency: the measured peak frequency (parabolic on log power),
    its prominence (dB) over the median of its surroundings, and its power above that floor."""
    df = freqs[1] - freqs[0]
    half = max(1, int(round(LINE_HALF_HZ / df)))
    lo_off, hi_off = int(round(LINE_FLOOR_HZ[0] / df)), int(round(LINE_FLOOR_HZ[1] / df))
    idx = np.round(centres / df).astype(int)
    ok = (idx - hi_off >= 0) & (idx + hi_off < len(psd))
    f_out = centres.astype(np.float64).copy()
    prom = np.zeros(len(centres))
    pw = np.zeros(len(centres))
    for j in np.flatnonzero(ok):
        i = idx[j]
        p = i - half + int(np.argmax(psd[i - half : i + half + 1]))
        near = np.concatenate((psd[i - hi_off : i - lo_off], psd[i + lo_off + 1 : i + hi_off + 1]))
        floor = float(np.median(near)) + TINY
        a, b, c = np.log(psd[p - 1 : p + 2] + TINY)
        shift = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) < 0 else 0.0
        f_out[j] = (p + float(np.clip(shift, -0.5, 0.5))) * df
        prom[j] = float(10 * np.log10(psd[p] / floor + TINY))
        # a Hann line spreads over about 2 * HUM_PAD bins; its power is their sum above the floor
        span = psd[max(p - 2 * HUM_PAD, 0) : p + 2 * HUM_PAD + 1]
        pw[j] = max(float(np.sum(span - floor)) * df, 0.0)
    return f_out, prom, pw


def measure_hum(x: np.ndarray, sample_rate: int) -> Hum:
    """Find a mains comb in mono ``x``: the fundamental in ``HUM_F0_HZ`` (any value, not only 50
    or 60) whose first ``HUM_MAX_HARMONICS`` harmonics under 1.8 kHz stand out most over their
    surroundings, summed (a missing fundamental or a mis-clocked recording is still found); then
    each harmonic's own frequency, measured from its peak, and the fundamental re-fitted to them.
    A single line counts only within ``LONE_LINE_HZ`` of 50 or 60 Hz."""
    freqs, psd, power = steady_spectrum(x, sample_rate)
    empty = Hum(None, np.zeros(0), np.zeros(0), np.zeros(0))
    if len(freqs) == 0 or power <= 0:
        return empty
    top = 0.45 * HUM_RATE
    grid = np.arange(HUM_F0_HZ[0], HUM_F0_HZ[1] + HUM_F0_STEP_HZ / 2, HUM_F0_STEP_HZ)
    df = freqs[1] - freqs[0]
    log_psd = np.log10(psd + TINY)
    # every bin's prominence over its surroundings (dB), once for all candidates; the surroundings
    # as the mean log power (a geometric mean: cheap, and as robust as a median here)
    lo_off, hi_off = int(round(LINE_FLOOR_HZ[0] / df)), int(round(LINE_FLOOR_HZ[1] / df))
    half = max(1, int(round(LINE_HALF_HZ / df)))
    peak = np.lib.stride_tricks.sliding_window_view(np.pad(log_psd, half, mode="edge"), 2 * half + 1).max(axis=1)
    c = np.concatenate(([0.0], np.cumsum(np.pad(log_psd, hi_off, mode="edge"))))
    i = np.arange(len(log_psd)) + hi_off
    sides = (c[i - lo_off] - c[i - hi_off] + c[i + hi_off + 1] - c[i + lo_off + 1]) / (2 * (hi_off - lo_off))
    bin_prom = 10 * (peak - sides)
    ks = np.arange(1, HUM_MAX_HARMONICS + 1)
    at = np.outer(grid, ks)  # (candidates, harmonics) expected line frequencies
    p = bin_prom[np.minimum(np.round(at / df).astype(int), len(bin_prom) - 1)]
    scores = np.sum(np.where(at < top, np.clip(p - MIN_LINE_DB, 0.0, None), 0.0), axis=1)
    if not np.any(scores > 0):
        return empty
    best_f0 = float(grid[int(np.argmax(scores))])
    ks = np.arange(1, min(HUM_MAX_HARMONICS, int(top // best_f0)) + 1)
    f_meas, prom, pw = _lines_at(freqs, psd, ks * best_f0)
    good = prom >= MIN_LINE_DB
    level = 10 * np.log10(np.maximum(pw, TINY) / power)
    lone = int(good.sum()) == 1 and min(abs(float(f_meas[good][0]) - m) for m in MAINS_HZ) > LONE_LINE_HZ
    if not good.any() or lone:
        return Hum(None, f_meas, prom, level)
    fit = prom >= STRONG_LINE_DB if np.any(prom >= STRONG_LINE_DB) else good  # weak lines may be a voice's
    f0 = float(np.sum(f_meas[fit] * ks[fit]) / np.sum(ks[fit] ** 2))  # least squares through 0
    return Hum(f0, f_meas, prom, level)


def residual_lines(x: np.ndarray, sample_rate: int, lines_hz: np.ndarray) -> tuple[np.ndarray, float]:
    """Prominence (dB) of ``x`` at each of ``lines_hz`` and the power of what still stands
    ``MIN_LINE_DB`` out there, relative to the whole signal (dB): re-measuring after a repair."""
    freqs, psd, power = steady_spectrum(x, sample_rate)
    if len(freqs) == 0 or len(lines_hz) == 0 or power <= 0:
        return np.zeros(len(lines_hz)), -120.0
    _, prom, pw = _lines_at(freqs, psd, np.asarray(lines_hz, dtype=np.float64))
    return prom, float(10 * np.log10(max(float(np.sum(pw[prom >= MIN_LINE_DB])), TINY) / power))
