"""Low-frequency and bandwidth measures: mains hum, rumble (dB), effective bandwidth (Hz)."""

from __future__ import annotations

import numpy as np

from pipeline.numeric import median, percentile

from .frames import EPS, frame_mask, frames_of, power_db, to_rate

LOW_RATE = 1000  # hum and rumble live under 400 Hz: measured on a 1 kHz copy


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
    return np.arange(top, dtype=np.float64), percentile(spec, 20, axis=0) * norm, np.mean(spec, axis=0) * norm


def hum(
    x: np.ndarray, sample_rate: int, *, harmonics: int = 6, spectrum: Spectrum | None = None
) -> tuple[float | None, float, float]:
    """Mains hum: ``(frequency, prominence_db, level_db)``.

    Spectra of 1 s segments (1 Hz bins) are reduced to their 20th percentile per bin, which
    keeps lines present all the time (hum) and drops what comes and goes (speech harmonics).
    Prominence is the excess (dB) of the 50 or 60 Hz line over the spectrum 4-12 Hz around it
    (speech has almost nothing that low); ``level_db`` is the power of that line and its first
    ``harmonics`` multiples relative to the whole signal. Frequency is None under 6 dB.
    ``spectrum`` is ``low_spectrum(x, sample_rate)`` when the caller already has it.
    """
    f, pxx, _ = spectrum if spectrum is not None else low_spectrum(x, sample_rate)
    if len(f) == 0:
        return None, 0.0, -120.0
    df = 1.0
    total = float(np.var(x)) + EPS
    best: tuple[float | None, float, float] = (None, 0.0, -120.0)
    lo_off, hi_off = int(round(4 / df)), int(round(12 / df))
    for base in (50.0, 60.0):
        proms, power = [], 0.0
        for k in range(1, harmonics + 1):
            i = int(round(base * k / df))
            if i + hi_off >= len(pxx):
                break
            line = float(np.max(pxx[i - 1 : i + 2]))
            near = np.concatenate((pxx[i - hi_off : i - lo_off], pxx[i + lo_off + 1 : i + hi_off + 1]))
            floor = float(median(near)) + EPS
            proms.append(float(power_db(line / floor)))
            power += max(float(np.sum(pxx[i - 1 : i + 2])) - 3 * floor, 0.0) * df
        prom = proms[0] if proms else 0.0
        if prom > best[1]:
            best = (base, prom, float(power_db(power / total)))
    if best[1] < 6.0:
        return None, best[1], best[2]
    return best


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
