"""Degradations at known strength, built from the real recordings in fixtures/ (tests and bench)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RATE = 16000
BABBLE_SOURCES = (
    "speech_arctic_awb_16k.wav",
    "speech_arctic_slt_16k.wav",
    "speech_goforward_16k.wav",
    "speech_numbers_16k.wav",
    "speech_chan3_11k.wav",
    "meeting_ami_trn05_16k.flac",
)


@lru_cache(maxsize=32)
def _read(name: str) -> tuple[np.ndarray, int]:
    x, sr = sf.read(FIXTURES / name, dtype="float32", always_2d=True)
    out = np.ascontiguousarray(x[:, 0])
    out.setflags(write=False)
    return out, int(sr)


def load(name: str, rate: int | None = RATE) -> np.ndarray:
    """The first channel of a fixture as float32, resampled to ``rate`` (None: as stored)."""
    x, sr = _read(name)
    if rate is None or rate == sr:
        return x.copy()
    import soxr

    return soxr.resample(x, sr, rate, quality="HQ").astype(np.float32)


def rate_of(name: str) -> int:
    return _read(name)[1]


def speech_mask(n: int, rate: int, segments: np.ndarray) -> np.ndarray:
    """True on samples inside the speech segments (seconds)."""
    mask = np.zeros(n, dtype=bool)
    for a, b in np.asarray(segments, dtype=np.float64).reshape(-1, 2):
        mask[int(a * rate) : int(b * rate)] = True
    return mask


def speech_power(x: np.ndarray, rate: int, segments: np.ndarray) -> float:
    """Mean power of ``x`` over its speech segments (the whole signal if there are none)."""
    mask = speech_mask(len(x), rate, segments)
    sel = x[mask] if mask.any() else x
    return float(np.mean(np.square(sel, dtype=np.float64)))


def white(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def pink(n: int, seed: int = 0) -> np.ndarray:
    """1/f noise (power falls 3 dB per octave), unit variance."""
    spec = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    y = np.fft.irfft(spec / np.sqrt(f), n)
    return (y / np.std(y)).astype(np.float32)


def babble(n: int, rate: int = RATE, talkers: int = 6, seed: int = 0) -> np.ndarray:
    """Several other voices talking at once (other fixtures, random offsets, each looped), unit variance."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n, dtype=np.float64)
    for k in range(talkers):
        src = load(BABBLE_SOURCES[k % len(BABBLE_SOURCES)], rate).astype(np.float64)
        src = src / (np.std(src) + 1e-12)
        reps = int(np.ceil((n + len(src)) / len(src)))
        start = int(rng.integers(0, len(src)))
        out += np.tile(src, reps)[start : start + n]
    return (out / np.std(out)).astype(np.float32)


def music(n: int, rate: int = RATE, which: str = "nonspeech_music_stereo_44k.flac", seed: int = 0) -> np.ndarray:
    """A music recording looped to ``n`` samples at ``rate``, unit variance."""
    src = load(which, rate).astype(np.float64)
    src = src / (np.std(src) + 1e-12)
    start = int(np.random.default_rng(seed).integers(0, len(src)))
    reps = int(np.ceil((n + len(src)) / len(src)))
    return np.tile(src, reps)[start : start + n].astype(np.float32)


def mix_at_snr(x: np.ndarray, noise: np.ndarray, snr_db: float, rate: int, segments: np.ndarray) -> np.ndarray:
    """``x`` plus ``noise`` scaled so that speech power (over ``segments``) / noise power = ``snr_db``."""
    ps = speech_power(x, rate, segments)
    pn = float(np.mean(np.square(noise[: len(x)], dtype=np.float64)))
    gain = np.sqrt(ps / (pn * 10 ** (snr_db / 10)))
    return (x + gain * noise[: len(x)]).astype(np.float32)


def add_hum(x: np.ndarray, rate: int, freq_hz: float, level_db: float, segments: np.ndarray, harmonics: int = 5) -> np.ndarray:
    """Mains hum (``harmonics`` partials, amplitude 1/k) at ``level_db`` relative to the speech power."""
    t = np.arange(len(x)) / rate
    h = sum(np.sin(2 * np.pi * freq_hz * k * t + k) / k for k in range(1, harmonics + 1))
    return mix_at_snr(x, np.asarray(h, dtype=np.float32), -level_db, rate, segments)


def clip_fraction(x: np.ndarray, fraction: float) -> np.ndarray:
    """Hard-clip so that ``fraction`` of the samples sit at full scale (±1)."""
    thr = float(np.quantile(np.abs(x), 1.0 - fraction))
    return np.clip(x / thr, -1.0, 1.0).astype(np.float32)


def ramp(x: np.ndarray, span_db: float) -> np.ndarray:
    """A gain that rises linearly in dB by ``span_db`` over the clip (centred on 0 dB)."""
    g = np.linspace(-span_db / 2, span_db / 2, len(x))
    return (x * 10 ** (g / 20)).astype(np.float32)


def narrowband(x: np.ndarray, rate: int, to_rate: int) -> np.ndarray:
    """Upsample ``x`` from ``rate`` to ``to_rate``: the same narrow band, dressed as a higher rate."""
    import soxr

    return soxr.resample(x, rate, to_rate, quality="HQ").astype(np.float32)


def normalize_peak(x: np.ndarray, peak: float = 0.7) -> np.ndarray:
    m = float(np.max(np.abs(x)))
    return (x * (peak / m)).astype(np.float32) if m > 0 else x


@lru_cache(maxsize=1)
def reader() -> tuple[np.ndarray, np.ndarray]:
    """20 s of read speech (librivox, 16 kHz, peak 0.7) and its speech segments (seconds)."""
    from pipeline import speech

    x = normalize_peak(load("speech_librivox_16k.wav")[: 20 * RATE])
    return x, speech.detect(x, RATE).segments


@lru_cache(maxsize=1)
def reader_without_hum() -> tuple[np.ndarray, np.ndarray]:
    """Read speech with no mains hum of its own (11 kHz source at 16 kHz, peak 0.7) and its speech segments."""
    from pipeline import speech

    x = normalize_peak(load("speech_chan3_11k.wav"))
    return x, speech.detect(x, RATE).segments
