"""Noise measures: speech-to-noise ratio (dB), clipping on flat tops, DC offset."""

from __future__ import annotations

import numpy as np

from pipeline.numeric import median

from .frames import EPS, frame_mask, frames_of, power_db

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
