"""quality: measure noise, clipping, loudness steadiness, hum, bandwidth, music and extra voices."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from pipeline.clip import Clip, Fact
from pipeline.dsp import moving_max, moving_mean, rbj_biquad
from pipeline.errors import service_error
from pipeline.numeric import dct_matrix, median, percentile
from pipeline.registry import register
from pipeline.speech import segments_of as speech_segments
from pipeline.stage import option

ANALYSIS_RATE = 16000  # everything but clipping, DC and bandwidth is measured at 16 kHz
EPS = 1e-12


# --------------------------------------------------------------------------- helpers


def as_mono(x: np.ndarray) -> np.ndarray:
    """The first channel (the one the service uses) of ``(channels, frames)`` or 1-D samples, float64."""
    arr = np.asarray(x)
    if arr.ndim == 2:
        arr = arr[0]
    return np.asarray(arr, dtype=np.float64)


def to_rate(x: np.ndarray, sample_rate: int, rate: int = ANALYSIS_RATE) -> np.ndarray:
    """Mono ``x`` resampled to ``rate`` (soxr), float64."""
    if sample_rate == rate or len(x) == 0:
        return np.asarray(x, dtype=np.float64)
    import soxr

    return np.asarray(soxr.resample(np.asarray(x, dtype=np.float32), sample_rate, rate, quality="HQ"), dtype=np.float64)


def as_segments(segments: Any) -> np.ndarray:
    """Speech segments as a float ``(n, 2)`` array in seconds."""
    return np.asarray(segments if segments is not None else [], dtype=np.float64).reshape(-1, 2)


def frame_mask(n_frames: int, hop_s: float, frame_s: float, segments: np.ndarray, guard_s: float = 0.0) -> np.ndarray:
    """Per frame: True when the frame lies inside a speech segment (widened by ``guard_s``)."""
    centres = np.arange(n_frames) * hop_s + frame_s / 2
    mask = np.zeros(n_frames, dtype=bool)
    for a, b in segments:
        mask |= (centres >= a - guard_s) & (centres < b + guard_s)
    return mask


def frames_of(x: np.ndarray, frame: int, hop: int) -> np.ndarray:
    """A strided ``(n, frame)`` view of ``x`` (no copy); empty when ``x`` is shorter than a frame."""
    if len(x) < frame:
        return np.zeros((0, frame), dtype=x.dtype)
    return np.lib.stride_tricks.sliding_window_view(x, frame)[::hop]


def power_db(p: float | np.ndarray) -> Any:
    return 10.0 * np.log10(np.maximum(p, EPS))


# --------------------------------------------------------------------------- SNR


SNR_FRAME_S = 0.02


def snr_estimate(
    x: np.ndarray, sample_rate: int, segments: np.ndarray, *, min_pause_s: float = 1.0, guard_s: float = 0.05
) -> tuple[float, str]:
    """Speech-to-noise ratio (dB) and how it was found.

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
        pn = float(median(p[pause]))  # the median: robust to breaths and speech edges the VAD left out
        method = "pauses"
    else:
        q = np.sort(p)
        pn = float(np.mean(q[: max(1, len(q) // 10)]))
        method = "percentile"
    return float(power_db(max(ps - pn, EPS)) - power_db(pn)) if pn > 0 else 120.0, method


# --------------------------------------------------------------------------- clipping, DC


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


# --------------------------------------------------------------------------- loudness


@functools.lru_cache(maxsize=16)
def _k_weighting(sample_rate: int) -> np.ndarray:
    """ITU-R BS.1770 K-weighting (shelf then high-pass) as second-order sections, at any rate: the
    cookbook parameters that give the standard's 48 kHz coefficients."""
    return np.stack(
        [
            rbj_biquad("high_shelf", 1681.97, 0.7072, 3.99984, sample_rate),
            rbj_biquad("high_pass", 38.1355, 0.5003, 0.0, sample_rate),
        ]
    )


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
    w = np.abs(_sos_response(_k_weighting(sample_rate), freqs, sample_rate)) ** 2
    w[1 : (block + 1) // 2] *= 2.0
    return w / (block * block)


def short_term_loudness(
    x: np.ndarray, sample_rate: int, *, window_s: float = 1.0, hop_s: float = 0.25
) -> tuple[np.ndarray, float]:
    """K-weighted loudness (LUFS) of ``window_s`` windows every ``hop_s``, and the hop in seconds.

    The signal is cut into blocks of gcd(window, hop) samples; each block's K-weighted energy is
    read off its spectrum (Parseval, with |H_K|^2 from the BS.1770 filters) and a window sums its
    blocks. Filter tails across block edges are ignored: within 0.2 LU of time-domain filtering
    on speech, at a fraction of the cost of filtering the whole signal.
    """
    hop = max(1, int(round(hop_s * sample_rate)))
    win = max(hop, int(round(window_s * sample_rate)))
    if len(x) < win:
        return np.zeros(0), hop / sample_rate
    block = math.gcd(win, hop)
    nb = len(x) // block
    spec = np.fft.rfft(np.asarray(x[: nb * block], dtype=np.float32).reshape(nb, block), axis=1)
    energy = (spec.real**2 + spec.imag**2) @ _k_power_weights(block, sample_rate).astype(np.float32)
    c = np.concatenate(([0.0], np.cumsum(energy, dtype=np.float64)))
    per_win, per_hop = win // block, hop // block
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
    spread = float(percentile(v, 95) - percentile(v, 10))
    slope = float(np.polyfit(t, v, 1)[0]) * 10.0 if np.ptp(t) > 0 else 0.0
    return spread, slope


# --------------------------------------------------------------------------- hum


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


# --------------------------------------------------------------------------- bandwidth


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


# --------------------------------------------------------------------------- MFCC, speakers


@functools.lru_cache(maxsize=8)
def _mel_bank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    def mel(f: np.ndarray | float) -> Any:
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    pts = hz(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    bank = np.zeros((n_mels, len(freqs)))
    for m in range(n_mels):
        lo, c, hi = pts[m], pts[m + 1], pts[m + 2]
        bank[m] = np.maximum(0.0, np.minimum((freqs - lo) / (c - lo), (hi - freqs) / (hi - c)))
    return bank


def mfcc(x16: np.ndarray, *, n_mfcc: int = 13, n_mels: int = 26, fmax: float = 4000.0) -> np.ndarray:
    """MFCCs ``(frames, n_mfcc)`` of 16 kHz audio: 25 ms Hann frames every 10 ms, c0 included.

    The mel bank stops at ``fmax`` (4 kHz by default) so that narrowband and wideband
    recordings of one voice give the same coefficients.
    """
    fr = frames_of(np.asarray(x16, dtype=np.float32), 400, 160)
    if len(fr) == 0:
        return np.zeros((0, n_mfcc))
    bank = _mel_bank(ANALYSIS_RATE, 512, n_mels, 60.0, fmax)
    top = int(np.flatnonzero(bank.any(axis=0))[-1]) + 1
    window = np.hanning(400).astype(np.float32)
    weights = bank[:, :top].T.astype(np.float32)
    dct = dct_matrix(n_mels)[:, :n_mfcc]
    out = np.empty((len(fr), n_mfcc))
    padded = np.zeros((min(len(fr), MFCC_BLOCK), 512), dtype=np.float32)  # frames zero-padded to the FFT size
    for lo in range(0, len(fr), MFCC_BLOCK):  # 20 s of frames at a time: flat memory on long inputs
        block = fr[lo : lo + MFCC_BLOCK]
        np.multiply(block, window, out=padded[: len(block), :400])  # windowed straight into place: one copy
        spec = np.fft.rfft(padded[: len(block)], axis=1)[:, :top]
        mel = (spec.real**2 + spec.imag**2) @ weights
        out[lo : lo + MFCC_BLOCK] = np.log(mel + 1e-10) @ dct
    return out


MFCC_HOP_S = 0.01
MFCC_BLOCK = 2000  # frames per block in ``mfcc``
MFCC_FRAME_S = 0.025


def _runs(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of the runs of True in 1-D ``b``."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], b.astype(np.int8), [0]))))
    return edges[::2], edges[1::2] - edges[::2]


MUSIC_HOP = 256


def held_tones(
    x16: np.ndarray, *, select: np.ndarray | None = None, min_hold_s: float = 0.3, prominence_db: float = 8.0
) -> np.ndarray:
    """Per frame (64 ms, every 16 ms) and bin (400 Hz-4 kHz, above most hum harmonics): True inside
    a tonal peak that has held its frequency (within one bin) for at least ``min_hold_s``.

    Notes of music hold still; the harmonics of speech glide with the voice's pitch. With
    ``select`` (a boolean mask over frames) only those frames are analysed (a held tone must lie
    within consecutive selected frames); the rows returned are theirs.
    """
    n_fft, hop = 1024, MUSIC_HOP
    fr = frames_of(np.asarray(x16, dtype=np.float32), n_fft, hop)
    idx = np.arange(len(fr)) if select is None else np.flatnonzero(select[: len(fr)])
    lo, hi = int(400 * n_fft / ANALYSIS_RATE), int(4000 * n_fft / ANALYSIS_RATE)
    if len(idx) < 3:
        return np.zeros((len(idx), hi - lo), dtype=bool)
    db = power_db(np.abs(np.fft.rfft(fr[idx] * np.hanning(n_fft).astype(np.float32), axis=1)[:, lo - 9 : hi + 9]) ** 2)
    base = moving_mean(db, 17)[:, 9:-9]
    core = db[:, 9:-9]
    peak = (core >= moving_max(db, 3)[:, 9:-9]) & (core - base >= prominence_db)
    peak &= core > np.max(core, axis=1, keepdims=True) - 50.0
    tonal = moving_max(peak.astype(np.uint8), 3).astype(bool)
    tonal[np.flatnonzero(np.diff(idx) > 1) + 1] = False  # a gap in the selection breaks every run
    need = int(round(min_hold_s * ANALYSIS_RATE / hop))
    flat = np.concatenate([tonal, np.zeros((1, tonal.shape[1]), dtype=bool)]).T.reshape(-1)
    starts, lens = _runs(flat)
    held = np.zeros(flat.shape, dtype=bool)
    for s, n in zip(starts[lens >= need], lens[lens >= need]):
        held[s : s + n] = True
    return np.ascontiguousarray(held.reshape(tonal.shape[1], -1)[:, : len(idx)].T)


MUSIC_HOP_S = MUSIC_HOP / ANALYSIS_RATE
MUSIC_FRAME_S = 1024 / ANALYSIS_RATE


def music_share(x16: np.ndarray, segments: np.ndarray, *, max_bin_share: float = 0.5, min_pause_s: float = 1.0) -> float | None:
    """Share (0-1) of pause frames in which a held tone sounds: music under the speech shows in
    its pauses. Bins held in more than ``max_bin_share`` of the pauses (hum, a fan's whine)
    are left out. None when the pauses total less than ``min_pause_s``."""
    n = max(0, (len(x16) - 1024) // MUSIC_HOP + 1)
    pause = ~frame_mask(n, MUSIC_HOP_S, MUSIC_FRAME_S, segments, guard_s=0.05)
    if n == 0 or pause.sum() * MUSIC_HOP_S < min_pause_s:
        return None
    hp = held_tones(x16, select=pause)
    hp[:, hp.mean(axis=0) > max_bin_share] = False
    return float(hp.any(axis=1).mean())


def speaker_change(
    x16: np.ndarray, segments: np.ndarray, *, min_side_s: float = 1.0, mfccs: np.ndarray | None = None
) -> float:
    """Evidence (nats per frame, BIC-penalised or cross-validated) that the voice changes: above
    0, two voices explain the speech better than one.

    Uses MFCCs 1-12 of the loudest 70 % of speech frames, and the larger of two tests:

    - a change of voice (A then B): one diagonal Gaussian against two split at the best change
      point (at least ``min_side_s`` of speech each side), BIC-penalised;
    - two voices taking turns (A B A B): see :func:`_turn_evidence`.

    One voice moves its spectrum with every sound but keeps its average; a second voice moves
    the average. Two similar voices (two men) taking short turns still read as one.
    ``mfccs`` is ``mfcc(x16)`` when the caller has it (for instance sliced from a longer signal).
    """
    c = mfcc(x16) if mfccs is None else mfccs
    if len(c) == 0:
        return 0.0
    mask = frame_mask(len(c), MFCC_HOP_S, MFCC_FRAME_S, segments)
    energy = c[:, 0]
    if mask.sum() < 2 * min_side_s / MFCC_HOP_S + 1:
        return 0.0
    keep = mask & (energy > percentile(energy[mask], 30))  # voiced, loud frames: less room noise
    f = c[keep, 1:13]
    n = len(f)
    side = int(min_side_s / MFCC_HOP_S * 0.7)
    if n < 2 * side:
        return 0.0

    c1 = np.cumsum(f, axis=0)
    c2 = np.cumsum(f * f, axis=0)

    def logvar(s1: np.ndarray, s2: np.ndarray, m: np.ndarray) -> np.ndarray:
        var = s2 / m[:, None] - (s1 / m[:, None]) ** 2
        return np.asarray(0.5 * np.sum(np.log(np.maximum(var, 0.0) + 1e-6), axis=1))

    cuts = np.arange(side, n - side + 1)
    left = logvar(c1[cuts - 1], c2[cuts - 1], cuts.astype(np.float64))
    right = logvar(c1[-1] - c1[cuts - 1], c2[-1] - c2[cuts - 1], (n - cuts).astype(np.float64))
    whole = logvar(c1[-1:], c2[-1:], np.array([float(n)]))[0]
    best = float(np.max(whole - (cuts * left + (n - cuts) * right) / n))
    penalty = 0.5 * 24 * np.log(n) / n * 3.0  # BIC: 2 x 12 more parameters; 25 ms frames overlap 2.5x
    change = best - penalty
    turns = _turn_evidence(f, np.flatnonzero(keep) * MFCC_HOP_S)
    return change if turns is None else max(change, turns)


TURN_CHUNK_S = 0.75  # chunks of speech short enough to fall mostly inside one turn
TURN_MIN_FRAMES = 15  # frames a chunk needs to count (0.15 s of loud speech)
TURN_MIN_CHUNKS = 6  # fewer: too few chunks to tell a second voice from chance


def _two_means(m: np.ndarray, w: np.ndarray, *, min_share: float = 0.2, iters: int = 20) -> np.ndarray | None:
    """Weighted 2-means of the rows of ``m``: True/False per row, or None when no split leaves
    each group at least ``min_share`` of the weight (a lone odd row is not a second voice).

    Deterministic: starts from the signs along the three main axes and from the median split
    along the first, keeps the tightest result.
    """
    total = float(w.sum())
    z = m - (w @ m) / total
    _, vecs = np.linalg.eigh((z * w[:, None]).T @ z)
    along = z @ vecs[:, -1]
    starts = [z @ vecs[:, -i] > 0 for i in range(1, min(3, m.shape[1]) + 1)] + [along > median(along)]
    best: tuple[float, np.ndarray] | None = None
    for lab in starts:
        spread = 0.0
        for _ in range(iters + 1):
            wa = float(w[lab].sum())
            if not 0.0 < wa < total:
                break
            a = (w * lab) @ z / wa
            b = (w * ~lab) @ z / (total - wa)
            spread = wa * float(a @ a) + (total - wa) * float(b @ b)  # weighted SS between the groups
            new = z @ (a - b) > 0.5 * float(a @ a - b @ b)  # nearer to a than to b
            if np.array_equal(new, lab):
                break
            lab = new
        share = float(w[lab].sum()) / total
        if min(share, 1.0 - share) < min_share:
            continue
        if best is None or spread > best[0]:  # most spread between, least within
            best = (spread, lab)
    return None if best is None else best[1]


def _pooled_var(n: np.ndarray, s1: np.ndarray, s2: np.ndarray, sel: np.ndarray) -> tuple[np.ndarray, float]:
    """Variance per column, and the count, of the frames of the selected rows from their counts
    ``n``, sums ``s1`` and sums of squares ``s2``."""
    m = float(n[sel].sum())
    return s2[sel].sum(axis=0) / m - (s1[sel].sum(axis=0) / m) ** 2, m


def _turn_evidence(f: np.ndarray, t: np.ndarray) -> float | None:
    """Cross-validated evidence (nats per frame) that two voices take turns, from frames ``f``
    (MFCC 1-12, standardised here) at times ``t`` (seconds); None with too few chunks.

    The speech is cut into chunks of ``TURN_CHUNK_S`` and each chunk into halves. The first
    halves' means are split into two groups (2-means, each axis scaled by how much a half-chunk
    mean wanders from its own chunk's); the second halves are then scored with that split: the
    gain in log-likelihood per frame of two means (shared diagonal variance) over one, minus
    what a split blind to the voice would gain by chance (the between-chunk share of the
    variance over chunks - 1). Then the other way round, and the two averaged; the grid is
    also shifted by a third and two thirds of a chunk and the three results averaged. One voice's chunks differ by
    what is said, which one half does not predict in the other; a second voice's chunks
    differ in both halves alike.
    """
    z = (f - f.mean(axis=0)) / (f.std(axis=0) + 1e-9)
    zz = z * z
    out: list[float] = []
    for shift in (0.0, 1 / 3, 2 / 3):  # three grids, a third of a chunk apart, averaged
        chunk = np.floor((t - t[0]) / TURN_CHUNK_S + shift).astype(np.int64)  # t rises: chunks are runs
        starts = np.flatnonzero(np.concatenate(([True], chunk[1:] != chunk[:-1])))
        cnt = np.diff(np.append(starts, len(z)))
        ok = cnt >= TURN_MIN_FRAMES
        k = int(ok.sum())
        if k < TURN_MIN_CHUNKS:
            continue
        starts, cnt = starts[ok], cnt[ok]
        mid = starts + (cnt + 1) // 2
        # per chunk and half: frames, sum and sum of squares (halves: [start, mid) and [mid, end))
        n = np.stack([(cnt + 1) // 2, cnt // 2]).astype(np.float64)
        edges = np.stack([starts, mid], axis=1).reshape(-1)
        s1 = np.add.reduceat(z, edges, axis=0).reshape(k, 2, -1).transpose(1, 0, 2)
        s2 = np.add.reduceat(zz, edges, axis=0).reshape(k, 2, -1).transpose(1, 0, 2)
        # reduceat runs each sum to the next edge; the last chunk's second half and every gap
        # between kept chunks (short chunks left out) must end at the chunk's own end instead
        ends = starts + cnt
        fix = np.flatnonzero(np.append(starts[1:], len(z)) != ends)
        for i in fix:
            s1[1, i] = z[mid[i] : ends[i]].sum(axis=0)
            s2[1, i] = zz[mid[i] : ends[i]].sum(axis=0)
        means = s1 / n[:, :, None]
        scale = np.sqrt(np.mean((means[0] - means[1]) ** 2, axis=0) / 2 + 1e-6)
        scores = []
        for h in (0, 1):
            lab = _two_means(means[h] / scale, cnt.astype(np.float64))
            if lab is None:
                break
            o = 1 - h  # score the split on the other halves
            total, m_all = _pooled_var(n[o], s1[o], s2[o], np.ones(k, dtype=bool))
            va, ma = _pooled_var(n[o], s1[o], s2[o], lab)
            vb, mb = _pooled_var(n[o], s1[o], s2[o], ~lab)
            within = (ma * va + mb * vb) / m_all
            chance = 0.5 * float(np.sum(means[o].var(axis=0) / total)) / (k - 1)
            scores.append(0.5 * float(np.sum(np.log(total / np.maximum(within, 1e-9)))) - chance)
        if len(scores) == 2:
            out.append(float(np.mean(scores)))
    return float(np.mean(out)) if out else None


# --------------------------------------------------------------------------- DNSMOS (optional)


def dnsmos(x16: np.ndarray) -> dict[str, float]:
    """DNSMOS P.835 scores (1-5) from the ONNX models shipped in ``speechmos`` (extra ``dnsmos``).

    Imported only when asked for: it pulls in librosa (about 1 s to import cold).
    """
    try:
        from speechmos import dnsmos as _dnsmos
    except ImportError as exc:  # the optional extra is missing
        raise RuntimeError("DNSMOS needs the optional extra: pip install 'voiceprep[dnsmos]'") from exc
    out = _dnsmos.run(np.asarray(x16, dtype=np.float32), ANALYSIS_RATE)
    return {f"dnsmos_{k.removesuffix('_mos')}": round(float(v), 2) for k, v in out.items() if k.endswith("_mos")}


# --------------------------------------------------------------------------- all measures


def measure(x: np.ndarray, sample_rate: int, segments: Any) -> dict[str, Any]:
    """Every quality measure of mono ``x`` (or channel 0 of ``(channels, frames)``) whose speech
    lies in ``segments`` (seconds), as the flat ``metrics`` entries the stage reports."""
    x = as_mono(x)
    segs = as_segments(segments)
    x16 = to_rate(x, sample_rate)
    snr, method = snr_estimate(x16, ANALYSIS_RATE, segs)
    ratio, run = clipping(x)
    spread, trend = loudness_spread(x16, ANALYSIS_RATE, segs)
    low = low_spectrum(x16, ANALYSIS_RATE)
    hum_hz, hum_prom, hum_level = hum(x16, ANALYSIS_RATE, spectrum=low)
    music = music_share(x16, segs)
    return {
        "snr_db": round(snr, 1),
        "snr_method": method,
        "clipped_ratio": round(ratio, 6),
        "clipped_run_ms": round(1000.0 * run / sample_rate, 2),
        "loudness_spread_lu": round(spread, 1),
        "loudness_trend_lu_per_10s": round(trend, 1),
        "dc_offset": round(dc_offset(x), 5),
        "hum_hz": hum_hz,
        "hum_prominence_db": round(hum_prom, 1),
        "hum_db": round(hum_level, 1),
        "rumble_db": round(rumble_db(x16, ANALYSIS_RATE, spectrum=low), 1),
        "bandwidth_hz": round(effective_bandwidth(x, sample_rate, segs)),
        "music_share": None if music is None else round(music, 3),
        "speaker_change": round(speaker_change(x16, segs), 3),
    }


def mfcc_slice(whole: np.ndarray, start_s: float, n_samples: int, first_frame: int = 0) -> np.ndarray:
    """The rows of ``mfcc(x16)`` (of a whole signal) that ``mfcc`` would give for the piece of
    ``n_samples`` starting at ``start_s``, to within half a hop (5 ms). ``whole`` may be the
    MFCCs of the signal from frame ``first_frame`` on (``mfcc(x16[160 * first_frame:])``: the
    same rows, as frames are not centred)."""
    n = max(0, (n_samples - 400) // 160 + 1)
    i0 = int(round(start_s / MFCC_HOP_S)) - first_frame
    return whole[max(i0, 0) : max(i0, 0) + n]


def window_quality_penalty(
    x: np.ndarray, sample_rate: int, segments: Any, *, mfccs: np.ndarray | None = None
) -> float:
    """How far a candidate window falls short of clean, steady, single-voice speech: 0 is clean,
    larger is worse (about 1 per 10 dB of SNR under 30 dB, per 4 LU of loudness spread over 8 LU,
    per 0.1 of speaker-change evidence over -0.05, per 0.1 % of clipped samples, and 2 for
    music filling the pauses). ``x`` is the window (mono or ``(channels, frames)``; channel 0 is
    judged), ``segments`` its speech in seconds from the window's start, ``mfccs`` the window's
    MFCCs when the caller has them (see ``mfcc_slice``). About 15-25 ms for a 15 s window at
    16 kHz; pure, so it can be called on every candidate.
    """
    x = as_mono(x)
    segs = as_segments(segments)
    x16 = to_rate(x, sample_rate)
    snr, _ = snr_estimate(x16, ANALYSIS_RATE, segs)
    spread, _ = loudness_spread(x16, ANALYSIS_RATE, segs)
    ratio, _ = clipping(x)
    music = music_share(x16, segs) or 0.0
    change = speaker_change(x16, segs, mfccs=mfccs)
    return float(
        max(0.0, 30.0 - snr) / 10.0
        + max(0.0, spread - 8.0) / 4.0
        + max(0.0, change + 0.05) * 10.0
        + ratio * 1000.0
        + 2.0 * music
    )


def _fmt_rate(hz: float) -> str:
    return f"{hz / 1000:g} kHz"


@register
@dataclass(frozen=True)
class Quality:
    """Predict the service's noisy/fluctuating refusals and say how to fix them (channel 1 judged).

    Measures SNR (dB), clipping, short-term loudness spread (LU), DC offset, mains hum, effective
    bandwidth (Hz), music in the pauses and a change of voice; adds them to ``info["metrics"]``.
    Raises InternalError ("audio preprocess server error") when the clip is likely refused as
    noisy or fluctuating; warns otherwise: low_snr, clipping, unsteady_loudness, hum,
    narrowband, music_bed, multiple_speakers, dc_offset.
    """

    name: ClassVar[str] = "quality"
    changes_audio: ClassVar[bool] = False
    needs: ClassVar[frozenset[Fact]] = frozenset()
    provides: ClassVar[frozenset[Fact]] = frozenset()

    min_snr_db: float = option(20.0, "warn (low_snr) when the speech-to-noise ratio is under this (dB)")
    refuse_snr_db: float = option(10.0, "refuse (InternalError) when the SNR is under this (dB)")
    max_clipped_ratio: float = option(1e-4, "warn (clipping) when more than this share of samples sit on flat tops")
    max_loudness_spread_lu: float = option(
        12.0, "warn (unsteady_loudness) when 1 s loudness over speech spreads (P95-P10) more than this (LU)"
    )
    refuse_loudness_spread_lu: float = option(18.0, "refuse (InternalError) when the loudness spread is over this (LU)")
    min_hum_prominence_db: float = option(10.0, "a 50/60 Hz line this far (dB) over its surroundings is hum")
    max_hum_db: float = option(-45.0, "warn (hum) when the hum's power relative to the whole signal is over this (dB)")
    min_bandwidth_hz: float = option(6000.0, "warn (narrowband) when the speech holds nothing above this (Hz)")
    max_music_share: float = option(
        0.2, "music_bed when held tones sound in more than this share of the pauses (0-1); refused if SNR < min_snr_db"
    )
    max_speaker_change: float = option(0.1, "warn (multiple_speakers) when the voice-change evidence is over this")
    max_dc_offset: float = option(0.02, "warn (dc_offset) when the mean sample is further than this from 0 (full scale 1)")
    dnsmos: bool = option(False, "also score DNSMOS (needs the `dnsmos` extra; about 2.4 s per 20 s clip, 6 s on the first call)")

    def __post_init__(self) -> None:
        if self.refuse_snr_db > self.min_snr_db:
            raise ValueError("refuse_snr_db must not exceed min_snr_db")
        if self.refuse_loudness_spread_lu < self.max_loudness_spread_lu:
            raise ValueError("refuse_loudness_spread_lu must not be under max_loudness_spread_lu")
        if not 0.0 <= self.max_clipped_ratio <= 1.0 or not 0.0 <= self.max_music_share <= 1.0:
            raise ValueError("max_clipped_ratio and max_music_share must be between 0 and 1")
        if self.min_bandwidth_hz <= 0 or self.max_dc_offset < 0:
            raise ValueError("min_bandwidth_hz must be positive and max_dc_offset >= 0")

    def findings(self, m: dict[str, Any], source_rate: int) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
        """``(warnings, refusals)``: ``(code, message, hint)`` and ``(message, hint)`` from the metrics."""
        warn: list[tuple[str, str, str]] = []
        refuse: list[tuple[str, str]] = []
        snr = m["snr_db"]
        noise_hint = "record closer to the microphone, away from fans, traffic and other voices"
        if snr < self.min_snr_db:
            msg = f"background noise: SNR {snr:.0f} dB, aim for more than {self.min_snr_db:.0f} dB"
            (refuse.append((msg, noise_hint)) if snr < self.refuse_snr_db else warn.append(("low_snr", msg, noise_hint)))
        music = m["music_share"]
        if music is not None and music > self.max_music_share:
            msg = f"music under the speech: held notes in {100 * music:.0f} % of the pauses"
            hint = "turn the music off and record again; the service refuses speech over music"
            (refuse.append((msg, hint)) if snr < self.min_snr_db else warn.append(("music_bed", msg, hint)))
        spread = m["loudness_spread_lu"]
        if spread > self.max_loudness_spread_lu:
            msg = (
                f"volume goes up and down: loudness spreads over {spread:.0f} LU "
                f"(trend {m['loudness_trend_lu_per_10s']:+.0f} LU per 10 s), aim for under {self.max_loudness_spread_lu:.0f} LU"
            )
            hint = "keep a steady distance from the microphone and a steady voice; switch off automatic gain"
            (refuse.append((msg, hint)) if spread > self.refuse_loudness_spread_lu else warn.append(
                ("unsteady_loudness", msg, hint)
            ))
        if m["clipped_ratio"] > self.max_clipped_ratio:
            warn.append((
                "clipping",
                f"clipping: {100 * m['clipped_ratio']:.2f} % of samples on flat tops (longest {m['clipped_run_ms']:.1f} ms)",
                "lower the recording gain so that peaks stay under -3 dBFS and record again; clipping cannot be undone",
            ))
        if m["hum_hz"] is not None and m["hum_prominence_db"] >= self.min_hum_prominence_db and m["hum_db"] > self.max_hum_db:
            warn.append((
                "hum",
                f"mains hum at {m['hum_hz']:.0f} Hz, {m['hum_db']:.0f} dB under the signal",
                "use a battery-powered or USB microphone away from power supplies; `voiceprep run` notches it out",
            ))
        nyquist = source_rate / 2
        if m["bandwidth_hz"] < self.min_bandwidth_hz and m["bandwidth_hz"] < 0.8 * nyquist:
            warn.append((
                "narrowband",
                f"nothing above {_fmt_rate(m['bandwidth_hz'])} though stored at {_fmt_rate(source_rate)}: "
                "a phone-quality or low-rate recording, resampled",
                "record again at 16 kHz or more; resampling cannot restore the lost treble and the clone will sound muffled",
            ))
        if m["speaker_change"] > self.max_speaker_change:
            warn.append((
                "multiple_speakers",
                f"the voice seems to change (evidence {m['speaker_change']:.2f} over {self.max_speaker_change:.2f})",
                "keep only one person's voice in the clip",
            ))
        if abs(m["dc_offset"]) > self.max_dc_offset:
            warn.append((
                "dc_offset",
                f"DC offset of {m['dc_offset']:+.3f} (full scale 1)",
                "`voiceprep run` removes it; a faulty sound card or microphone preamp causes it",
            ))
        return warn, refuse

    def __call__(self, clip: Clip) -> Clip:
        segs = speech_segments(clip)
        q = measure(clip.samples[0], clip.sample_rate, segs)
        if self.dnsmos:
            q.update(dnsmos(to_rate(as_mono(clip.samples[0]), clip.sample_rate)))
        warn, refuse = self.findings(q, clip.source.sample_rate)
        metrics = {**clip.metrics, **q}
        metrics["quality_warnings"] = [c for c, _, _ in warn]
        if refuse:
            message = "; ".join(msg for msg, _ in refuse) + " (the service answers \"audio preprocess server error\")"
            hint = "; ".join(dict.fromkeys(h for _, h in refuse))
            raise service_error("InternalError", message, hint=hint, metrics=metrics)
        out = clip.replace(metrics=metrics)
        for code, msg, hint in warn:
            out = out.warn(code, msg, hint)
        return out
