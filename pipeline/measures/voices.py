"""Voice measures: MFCCs, the MFCC evidence of a voice change, and the voice-embedding distance of two voices."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.numeric import dct_matrix

from .frames import ANALYSIS_RATE, frame_mask, frames_of

MFCC_HOP_S = 0.01
MFCC_BLOCK = 2000  # frames per block in ``mfcc``
MFCC_FRAME_S = 0.025


@functools.lru_cache(maxsize=8)
def _mel_bank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular mel filters ``(n_mels, n_fft // 2 + 1)`` spanning ``fmin``-``fmax`` (Hz) over the rfft bins."""
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


def mfcc_slice(whole: np.ndarray, start_s: float, n_samples: int, first_frame: int = 0) -> np.ndarray:
    """The rows of ``mfcc(x16)`` (of a whole signal) that ``mfcc`` would give for the piece of
    ``n_samples`` starting at ``start_s``, to within half a hop (5 ms). ``whole`` may be the
    MFCCs of the signal from frame ``first_frame`` on (``mfcc(x16[160 * first_frame:])``: the
    same rows, as frames are not centred)."""
    n = max(0, (n_samples - 400) // 160 + 1)
    i0 = int(round(start_s / MFCC_HOP_S)) - first_frame
    return whole[max(i0, 0) : max(i0, 0) + n]


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
    keep = mask & (energy > np.percentile(energy[mask], 30))  # voiced, loud frames: less room noise
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
    starts = [z @ vecs[:, -i] > 0 for i in range(1, min(3, m.shape[1]) + 1)] + [along > np.median(along)]
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


# ---- voice embeddings (GE2E encoder) and the two-voice distance built on them -----------------

VOICE_N_FFT = 400  # 25 ms frames every 10 ms, 40 linear-power mel bands: the encoder's training front end
VOICE_HOP = 160
VOICE_MELS = 40
CHUNK_FRAMES = 100  # 1 s of speech per embedding: short enough to sit inside one turn
CHUNK_HOP_FRAMES = 50
MAX_CHUNKS = 20  # more chunk positions than this (over about 10.5 s of speech): this many, spread evenly
CHUNK_LEVEL_DBFS = -30.0  # each chunk scaled to this RMS: the encoder reads linear power, so level would move it
MIN_CHUNKS = 8  # fewer chunks (under about 4.5 s of speech): no evidence either way
MIN_SHARE = 0.2  # each voice must hold this share of the chunks: a cough or a laugh is not a second voice


@functools.lru_cache(maxsize=1)
def voice_mel_bank() -> np.ndarray:
    """Slaney-style mel filters ``(40, 201)`` for 400-point frames at 16 kHz, area-normalised,
    0 Hz to Nyquist (the filters the encoder was trained with)."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0

    def to_mel(f: np.ndarray) -> np.ndarray:
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-9) / min_log_hz) / logstep, f / f_sp)

    def to_hz(m: np.ndarray) -> np.ndarray:
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    fft_hz = np.linspace(0.0, ANALYSIS_RATE / 2, VOICE_N_FFT // 2 + 1)
    pts = to_hz(np.linspace(0.0, float(to_mel(np.array(ANALYSIS_RATE / 2.0))), VOICE_MELS + 2))
    ramps = pts[:, None] - fft_hz[None, :]
    fdiff = np.diff(pts)
    w = np.maximum(0.0, np.minimum(-ramps[:-2] / fdiff[:-1, None], ramps[2:] / fdiff[1:, None]))
    bank = (w * (2.0 / (pts[2:] - pts[:-2]))[:, None]).astype(np.float32)
    bank.setflags(write=False)
    return bank


def voice_mels(x16: np.ndarray) -> np.ndarray:
    """Linear-power mel spectrogram ``(frames, 40)`` of 16 kHz audio: 25 ms periodic-Hann frames
    every 10 ms, centred (frame i at ``i * 10 ms``, zero padding at the ends)."""
    pad = np.pad(np.asarray(x16, dtype=np.float32), (VOICE_N_FFT // 2, VOICE_N_FFT // 2))
    n = 1 + (len(pad) - VOICE_N_FFT) // VOICE_HOP if len(pad) >= VOICE_N_FFT else 0
    out = np.empty((n, VOICE_MELS), dtype=np.float32)
    if n == 0:
        return out
    fr = np.lib.stride_tricks.sliding_window_view(pad, VOICE_N_FFT)[::VOICE_HOP][:n]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(VOICE_N_FFT) / VOICE_N_FFT)).astype(np.float32)
    bank = voice_mel_bank().T
    for lo in range(0, n, 4000):  # blocks of 40 s: flat memory on long inputs
        spec = np.fft.rfft(fr[lo : lo + 4000] * window, axis=1)
        out[lo : lo + 4000] = (spec.real**2 + spec.imag**2).astype(np.float32) @ bank
    return out


@dataclass(frozen=True)
class Chunks:
    """Stacks of speech frames to embed: ``mels (n, CHUNK_FRAMES, 40)``, each scaled to
    ``CHUNK_LEVEL_DBFS``, and each chunk's length of speech (seconds) it stands for."""

    mels: np.ndarray
    step_s: float


def speech_chunks(x16: np.ndarray, segments: np.ndarray, *, max_chunks: int = MAX_CHUNKS) -> Chunks:
    """Cut the speech of 16 kHz ``x16`` (pauses removed) into 1 s chunks every 0.5 s, keeping at
    most ``max_chunks`` of them, spread evenly (the encoder's cost is per chunk; on 232 real clips
    20 chunks separate one voice from two as well as all of them); a tail shorter than a chunk is
    used only when it is all there is."""
    mel = voice_mels(x16)
    t = np.arange(len(mel)) * (VOICE_HOP / ANALYSIS_RATE)
    keep = np.zeros(len(mel), dtype=bool)
    for a, b in np.asarray(segments, dtype=np.float64).reshape(-1, 2):
        keep |= (t >= a) & (t < b)
    idx = np.flatnonzero(keep)
    if len(idx) < CHUNK_FRAMES // 2:
        return Chunks(np.zeros((0, CHUNK_FRAMES, VOICE_MELS), np.float32), 0.0)
    grid = np.arange(0, max(1, len(idx) - CHUNK_FRAMES + 1), CHUNK_HOP_FRAMES)
    starts = grid[np.round(np.linspace(0, len(grid) - 1, max_chunks)).astype(int)] if len(grid) > max_chunks else grid
    # mean square of each centred 25 ms frame (the mel frames' own framing), for the level
    sq = np.pad(np.asarray(x16, dtype=np.float64) ** 2, (VOICE_N_FFT // 2, VOICE_N_FFT // 2))
    c = np.concatenate(([0.0], np.cumsum(sq)))
    s0 = np.arange(len(mel)) * VOICE_HOP
    power = (c[np.minimum(s0 + VOICE_N_FFT, len(sq))] - c[s0]) / VOICE_N_FFT
    out = np.zeros((len(starts), CHUNK_FRAMES, VOICE_MELS), dtype=np.float32)
    target = 10 ** (CHUNK_LEVEL_DBFS / 10)
    for k, s in enumerate(starts):
        sel = idx[s : s + CHUNK_FRAMES]
        out[k, : len(sel)] = mel[sel] * (target / max(float(power[sel].mean()), 1e-12))
    return Chunks(out, len(idx) * VOICE_HOP / ANALYSIS_RATE / len(starts))


@functools.lru_cache(maxsize=1)
def _encoder() -> Any:
    import onnxruntime as ort

    from pipeline.models import VOICE_ENCODER

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(VOICE_ENCODER), sess_options=opts, providers=["CPUExecutionProvider"])


def embed(mels: np.ndarray, *, batch: int = 64) -> np.ndarray:
    """Unit-length voice embeddings ``(n, 256)`` of chunks ``(n, frames, 40)`` (the shipped GE2E encoder)."""
    if len(mels) == 0:
        return np.zeros((0, 256), dtype=np.float32)
    sess = _encoder()
    parts = [sess.run(None, {"mels": np.ascontiguousarray(mels[i : i + batch])})[0] for i in range(0, len(mels), batch)]
    return np.concatenate(parts)


def centroid_cosine(emb: np.ndarray, lab: np.ndarray) -> float:
    """Cosine similarity of the mean embedding of the rows in ``lab`` and that of the others."""
    a, b = emb[lab].mean(axis=0), emb[~lab].mean(axis=0)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def two_groups(emb: np.ndarray, *, min_share: float = MIN_SHARE, iters: int = 30) -> np.ndarray | None:
    """Split unit embeddings ``(n, d)`` into two groups (True/False per row) by spherical 2-means,
    or None when every split leaves a group under ``min_share`` of the rows (and at least 2).

    Deterministic: starts from the least similar pair and from the sign along the first principal
    axis, keeps the split whose group centroids are furthest apart.
    """
    n = len(emb)
    need = max(2.0, min_share * n)
    sim = emb @ emb.T
    i, j = np.unravel_index(int(np.argmin(sim)), sim.shape)
    z = emb - emb.mean(axis=0)
    axis = np.linalg.svd(z, full_matrices=False)[2][0]
    best: tuple[float, np.ndarray] | None = None
    for lab in (sim[:, i] >= sim[:, j], z @ axis > 0):
        for _ in range(iters):
            if lab.all() or not lab.any():
                break
            a, b = emb[lab].mean(axis=0), emb[~lab].mean(axis=0)
            new = emb @ (a / np.linalg.norm(a)) >= emb @ (b / np.linalg.norm(b))
            if np.array_equal(new, lab):
                break
            lab = new
        k = int(lab.sum())
        if min(k, n - k) < need:
            continue
        cos = centroid_cosine(emb, lab)
        if best is None or cos < best[0]:
            best = (cos, lab)
    return None if best is None else best[1]


@dataclass(frozen=True)
class VoiceEvidence:
    """The two-voice evidence of a recording: the cosine distance (0-2) between the centres of the
    best two-group split of its 1 s chunks' voice embeddings (None under ``MIN_CHUNKS`` chunks,
    0.0 when no split leaves each group ``MIN_SHARE`` of them), the chunks it rests on, and about
    how much speech each group holds (seconds, larger first)."""

    distance: float | None
    chunks: int
    group_s: tuple[float, float]


def voice_evidence(x16: np.ndarray, segments: np.ndarray) -> VoiceEvidence:
    """Two-voice evidence of 16 kHz mono ``x16`` whose speech lies in ``segments`` (seconds).

    One voice splits into two groups that still point the same way (distance 0.00-0.17 on
    real single readers); two voices split along the voice (0.13-0.5).
    """
    ch = speech_chunks(x16, segments)
    emb = embed(ch.mels)
    if len(emb) < MIN_CHUNKS:
        return VoiceEvidence(None, len(emb), (0.0, 0.0))
    lab = two_groups(emb)
    if lab is None:
        return VoiceEvidence(0.0, len(emb), (len(emb) * ch.step_s, 0.0))
    a, b = float(lab.sum()) * ch.step_s, float((~lab).sum()) * ch.step_s
    return VoiceEvidence(1.0 - centroid_cosine(emb, lab), len(emb), (max(a, b), min(a, b)))
