"""Speech detection: Silero VAD (ONNX, bundled model) decides speech; webrtcvad refines edges.

Silero runs through onnxruntime on the model files in ``pipeline/models`` (the published Silero
VAD v5, split into its encoder and decoder for speed: no torch, nothing downloaded). webrtcvad
(``webrtcvad-wheels``) is far cheaper but calls music and noise "speech", so it only moves
segment edges to 10 ms precision inside what Silero already called speech.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .clip import Clip, SpeechMap
from .models import SILERO_DECODER, SILERO_ENCODER
from .numeric import dct_matrix

VAD_RATE = 16000
FRAME = 512  # Silero window at 16 kHz: 32 ms
CONTEXT = 64  # samples of the previous window the model sees with each one
FRAME_S = FRAME / VAD_RATE
WEBRTC_FRAME = 160  # 10 ms at 16 kHz
DETECT_BLOCK = FRAME * 1875  # 60 s: a whole number of Silero (32 ms) and webrtcvad (10 ms) frames


ENCODE_BLOCK = 256  # frames per encoder call (8 s): wider blocks are no faster and hold more memory


@functools.lru_cache(maxsize=1)
def _silero() -> tuple[Any, Any]:
    """Silero VAD v5 (16 kHz) as shipped in ``pipeline/models``: its stateless encoder and its
    LSTM decoder as two onnxruntime sessions on one CPU thread (see ``pipeline.models.split_silero``).

    Pre-packing stays off: with it, onnxruntime's SGEMM splits the encoder's longer sums into
    blocks of 256 terms and the features would no longer be bit-identical to the published
    model's. Graph optimisation buys nothing on these graphs and costs set-up time.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.add_session_config_entry("session.disable_prepacking", "1")
    return tuple(
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        for path in (SILERO_ENCODER, SILERO_DECODER)
    )


def _webrtc_fresh(mode: int, rate: int, frame: int) -> Callable[[bytes, int], np.ndarray]:
    """A new webrtcvad detector as ``flags(pcm, n)``: its decision on each of the first ``n``
    frames of 16-bit ``pcm``. New per signal: it keeps a running noise estimate, so one reused
    across signals would make each answer depend on the files processed before."""
    import webrtcvad

    step = 2 * frame
    vad = webrtcvad.Vad(mode)
    return lambda pcm, n: np.fromiter(
        (vad.is_speech(pcm[i : i + step], rate) for i in range(0, n * step, step)), dtype=bool, count=n
    )


def to_vad_rate(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float32 at 16 kHz (soxr) for the detectors."""
    x = np.asarray(x, dtype=np.float32)
    if sample_rate != VAD_RATE:
        import soxr

        x = soxr.resample(x, sample_rate, VAD_RATE, quality="HQ").astype(np.float32, copy=False)
    return x


def _zero_lstm() -> np.ndarray:
    return np.zeros((2, 1, 128), dtype=np.float32)


def _zero_context() -> np.ndarray:
    return np.zeros(CONTEXT, dtype=np.float32)


@dataclass(frozen=True)
class SileroState:
    """Where one plain pass stands after some whole frames: the LSTM state ``(2, 1, 128)`` and
    the last ``CONTEXT`` samples, which the model sees in front of the next frame. The default
    is the start of a signal (zeros), where the published model begins."""

    lstm: np.ndarray = field(default_factory=_zero_lstm)
    context: np.ndarray = field(default_factory=_zero_context)


def silero_step(x16: np.ndarray, state: SileroState | None = None) -> tuple[np.ndarray, SileroState]:
    """Speech probability per 32 ms frame of mono 16 kHz ``x16`` continuing from ``state`` (the
    start of a signal when None), and the state after its last frame.

    A partial last frame is zero-padded, so only a signal's last piece may end mid-frame. The
    stateless encoder runs on all frames at once (``ENCODE_BLOCK`` at a time); the LSTM decoder
    runs the whole sequence with batch 1 in one call, from ``state``. Pieces of whole frames
    chained through their states give the probabilities of one pass over the signal: the
    published model run frame by frame from the zero state, to rounding (its per-frame
    matrix-vector products become one matrix product; tests/test_silero_split.py bounds it).
    """
    encoder, decoder = _silero()
    state = state or SileroState()
    n = int(np.ceil(len(x16) / FRAME))
    if n == 0:
        return np.zeros(0, dtype=np.float32), state
    # frame i's model input, its CONTEXT samples and its FRAME samples, is padded[i * FRAME : (i + 1) * FRAME + CONTEXT]
    padded = np.zeros(CONTEXT + n * FRAME, dtype=np.float32)
    padded[:CONTEXT] = state.context
    np.clip(x16, -1.0, 1.0, out=padded[CONTEXT : CONTEXT + len(x16)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, CONTEXT + FRAME)[::FRAME]
    features = np.empty((n, 1, 128), dtype=np.float32)
    for lo in range(0, n, ENCODE_BLOCK):
        hi = min(lo + ENCODE_BLOCK, n)
        features[lo:hi, 0] = encoder.run(None, {"input": np.ascontiguousarray(windows[lo:hi])})[0]
    probs, lstm = decoder.run(None, {"x": features, "state": state.lstm})
    return np.asarray(probs, dtype=np.float32).reshape(n), SileroState(lstm=lstm, context=padded[-CONTEXT:].copy())


def silero_probs(x16: np.ndarray) -> np.ndarray:
    """Speech probability per 32 ms frame of mono 16 kHz audio: one plain pass from the zero state
    (a partial last frame is zero-padded)."""
    return silero_step(x16)[0]


def webrtc_flags(x16: np.ndarray, mode: int = 2, frame: int = WEBRTC_FRAME, rate: int = VAD_RATE) -> np.ndarray:
    """webrtcvad decision per ``frame`` samples (10, 20 or 30 ms) of mono audio at ``rate``
    (8, 16, 32 or 48 kHz; 16 kHz by default)."""
    n = len(x16) // frame
    pcm = (np.clip(x16[: n * frame], -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    return _webrtc_fresh(mode, rate, frame)(pcm, n)


@functools.lru_cache(maxsize=1)
def _band_edges() -> np.ndarray:
    return np.unique(np.geomspace(4, FRAME // 2, 25).astype(int))


def stationary_frames(
    x16: np.ndarray, *, max_change: float = 3.0, lag_s: float = 0.19, min_s: float = 0.4
) -> np.ndarray:
    """Per 32 ms frame: True inside a held, unchanging sound (a sustained vowel, a tone, a hum).

    Speech changes its spectral shape every ~0.1 s. The cepstral distance between frames
    ``lag_s`` apart stays under ``max_change`` only for sounds held steady; stretches of at least
    ``min_s`` of that are flagged, so Silero's "voice-like" answer on them is overruled.
    """
    n = len(x16) // FRAME
    mask = np.zeros(int(np.ceil(len(x16) / FRAME)), dtype=bool)
    lag = max(1, int(round(lag_s / FRAME_S)))
    if n <= lag + 1:
        return mask
    frames = x16[: n * FRAME].reshape(n, FRAME) * np.hanning(FRAME).astype(np.float32)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    edges = _band_edges()
    bands = np.add.reduceat(power, edges[:-1], axis=1)[:, : len(edges) - 1]
    ceps = np.log(bands + 1e-9) @ dct_matrix(bands.shape[1])[:, 1:13]
    dist = np.sqrt(np.sum((ceps[lag:] - ceps[:-lag]) ** 2, axis=1))
    k = 5
    padded = np.pad(dist, (k // 2, k // 2), mode="edge")
    smooth = np.median(np.lib.stride_tricks.sliding_window_view(padded, k), axis=1)
    steady = np.zeros(n, dtype=bool)
    steady[lag:] |= smooth < max_change
    steady[:-lag] |= smooth < max_change
    # keep only runs of at least min_s
    min_frames = max(1, int(round(min_s / FRAME_S)))
    edges_ = np.flatnonzero(np.diff(np.concatenate([[0], steady.astype(np.int8), [0]])))
    for lo, hi in zip(edges_[::2], edges_[1::2]):
        if hi - lo >= min_frames:
            mask[lo:hi] = True
    return mask


def hysteresis_segments(
    probs: np.ndarray,
    *,
    threshold: float = 0.5,
    min_speech_s: float = 0.25,
    min_silence_s: float = 0.1,
    frame_s: float = FRAME_S,
) -> np.ndarray:
    """Speech segments ``(n, 2)`` in seconds from frame probabilities (enter at threshold, leave 0.15 below)."""
    low = max(threshold - 0.15, 0.01)
    segs: list[list[float]] = []
    in_speech = False
    start = 0
    quiet = 0
    min_quiet = max(1, int(round(min_silence_s / frame_s)))
    for i, p in enumerate(probs):
        if not in_speech:
            if p >= threshold:
                in_speech, start, quiet = True, i, 0
        elif p < low:
            quiet += 1
            if quiet >= min_quiet:
                segs.append([start * frame_s, (i - quiet + 1) * frame_s])
                in_speech = False
        else:
            quiet = 0
    if in_speech:
        segs.append([start * frame_s, (len(probs) - quiet) * frame_s])
    arr = np.array([s for s in segs if s[1] - s[0] >= min_speech_s], dtype=np.float64).reshape(-1, 2)
    return arr


def refine_edges(segments: np.ndarray, flags: np.ndarray, reach_s: float = 0.1) -> np.ndarray:
    """Move each edge to the nearest webrtcvad speech frame within ``reach_s`` (10 ms precision)."""
    if len(segments) == 0 or len(flags) == 0:
        return segments
    fs = WEBRTC_FRAME / VAD_RATE
    reach = int(round(reach_s / fs))
    out = segments.copy()
    total = len(flags)
    for k, (a, b) in enumerate(segments):
        ia, ib = int(round(a / fs)), int(round(b / fs))
        lo = max(ia - reach, 0)
        win = flags[lo : min(ia + reach, total)]
        hits = np.flatnonzero(win)
        if hits.size:
            out[k, 0] = (lo + hits[0]) * fs
        hi = min(ib + reach, total)
        win = flags[max(ib - reach, 0) : hi]
        hits = np.flatnonzero(win)
        if hits.size:
            out[k, 1] = (max(ib - reach, 0) + hits[-1] + 1) * fs
        if out[k, 1] <= out[k, 0]:
            out[k] = segments[k]
    return out


def merge_gaps(segments: np.ndarray, gap_s: float) -> np.ndarray:
    """Join segments separated by pauses of at most ``gap_s``: continuous speech runs."""
    if len(segments) == 0:
        return segments.reshape(0, 2)
    runs = [list(segments[0])]
    for a, b in segments[1:]:
        if a - runs[-1][1] <= gap_s:
            runs[-1][1] = max(runs[-1][1], b)
        else:
            runs.append([a, b])
    return np.array(runs, dtype=np.float64)


def detect(
    x: np.ndarray,
    sample_rate: int,
    *,
    threshold: float = 0.5,
    min_speech_s: float = 0.25,
    min_silence_s: float = 0.1,
    merge_gap_s: float = 0.5,
    refine: bool = True,
    webrtc_mode: int = 2,
    reject_steady: bool = True,
) -> SpeechMap:
    """Detect speech in mono ``x`` at ``sample_rate``: segments, continuous runs, probabilities."""
    x16 = to_vad_rate(x, sample_rate)
    return detect_stream(
        (x16[lo : lo + DETECT_BLOCK] for lo in range(0, len(x16), DETECT_BLOCK)),
        threshold=threshold,
        min_speech_s=min_speech_s,
        min_silence_s=min_silence_s,
        merge_gap_s=merge_gap_s,
        refine=refine,
        webrtc_mode=webrtc_mode,
        reject_steady=reject_steady,
        duration_s=len(x) / sample_rate,
    )


def _reblock(blocks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Consecutive pieces of any length regrouped into blocks of exactly ``size`` (the last may be short)."""
    pending: list[np.ndarray] = []
    have = 0
    for piece in blocks:
        piece = np.asarray(piece, dtype=np.float32).reshape(-1)
        while len(piece):
            take = min(size - have, len(piece))
            pending.append(piece[:take])
            have += take
            piece = piece[take:]
            if have == size:
                yield np.concatenate(pending) if len(pending) > 1 else pending[0]
                pending, have = [], 0
    if have:
        yield np.concatenate(pending)


def detect_stream(
    blocks: Iterable[np.ndarray],
    *,
    threshold: float = 0.5,
    min_speech_s: float = 0.25,
    min_silence_s: float = 0.1,
    merge_gap_s: float = 0.5,
    refine: bool = True,
    webrtc_mode: int = 2,
    reject_steady: bool = True,
    duration_s: float | None = None,
) -> SpeechMap:
    """``detect`` over consecutive mono 16 kHz pieces (any lengths) without holding the signal:
    memory is one 60 s block. Silero's state passes from block to block, so its probabilities
    are those of one pass over the whole signal.

    ``duration_s`` defaults to the samples seen.
    """
    probs_parts: list[np.ndarray] = []
    flags_parts: list[np.ndarray] = []
    state: SileroState | None = None
    seen = 0
    for block in _reblock(blocks, DETECT_BLOCK):
        p, state = silero_step(block, state)
        if reject_steady:
            p = np.where(stationary_frames(block), np.float32(0.0), p)
        probs_parts.append(p)
        if refine:
            flags_parts.append(webrtc_flags(block, webrtc_mode))
        seen += len(block)
    duration = seen / VAD_RATE if duration_s is None else duration_s
    probs = np.concatenate(probs_parts) if probs_parts else np.zeros(0, np.float32)
    segs = hysteresis_segments(probs, threshold=threshold, min_speech_s=min_speech_s, min_silence_s=min_silence_s)
    if refine and len(segs):
        segs = refine_edges(segs, np.concatenate(flags_parts))
    segs = merge_gaps(np.clip(segs, 0.0, duration), 0.0)
    return SpeechMap(segments=segs, runs=merge_gaps(segs, merge_gap_s), probs=probs, duration_s=duration)


def coarse_activity(x16: np.ndarray, *, mode: int = 3, floor_dbfs: float = -55.0, rate: int = VAD_RATE) -> np.ndarray:
    """Cheap voice activity per 30 ms: webrtcvad (most aggressive mode) and a level floor.

    Far cheaper than Silero, but it also fires on music and noise, so it only ranks where to
    look in long recordings; Silero then decides on the few places it ranks highest. ``rate``
    is any rate webrtcvad takes (8 kHz is enough to rank, and cheapest).
    """
    frame = 3 * rate // 100  # 30 ms
    flags = webrtc_flags(x16, mode, frame, rate)
    n = len(flags)
    if n == 0:
        return flags
    frames = x16[: n * frame].reshape(n, frame).astype(np.float64)
    level = 10 * np.log10(np.mean(frames * frames, axis=1) + 1e-12)
    return flags & (level > floor_dbfs)


def segments_of(clip: Clip) -> np.ndarray:
    """The speech segments (seconds) of ``clip``: its speech map when it has one, else detected
    on its first channel with the default settings."""
    if clip.speech is not None:
        return clip.speech.segments
    return detect(clip.samples[0], clip.sample_rate).segments
