"""Music measures: held tones (notes that keep their frequency) and their share of the pauses."""

from __future__ import annotations

import numpy as np

from pipeline.dsp import moving_max, moving_mean

from .frames import ANALYSIS_RATE, frame_mask, frames_of, power_db, runs

MUSIC_HOP = 256  # samples between held-tone frames (16 ms at 16 kHz)
MUSIC_HOP_S = MUSIC_HOP / ANALYSIS_RATE
MUSIC_FRAME_S = 1024 / ANALYSIS_RATE


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
    starts, lens = runs(flat)
    held = np.zeros(flat.shape, dtype=bool)
    for s, n in zip(starts[lens >= need], lens[lens >= need]):
        held[s : s + n] = True
    return np.ascontiguousarray(held.reshape(tonal.shape[1], -1)[:, : len(idx)].T)


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
