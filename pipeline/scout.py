"""Scout a long input with flat memory: find the region worth decoding in full for a `Scouting` stage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .audio_io import decode, iter_blocks
from .clip import SourceInfo
from .errors import PipelineError
from .pipeline import Pipeline
from .report_page.envelope import EnvelopeBuilder
from .stage import Scouting

LONG_INPUT_S = 120.0  # inputs longer than this are scouted first (seconds)
REGION_PAD_S = 1.0  # decoded around the chosen cut (seconds)
SCOUT_RATE = 16000  # the chain up to the scouting stage runs at this rate at most (the VAD's)
MARGIN_S = 5.0  # each ranked stretch is examined with this much context on both sides
MIN_STRETCHES = 2  # examine at least this many stretches ...
MAX_STRETCHES = 12  # ... and at most this many
ACTIVITY_RATE = 8000  # webrtcvad ranks stretches as well at 8 kHz, at half the cost
UNIT_S = 0.9  # seconds per activity value: 30 webrtcvad frames of 30 ms
MIN_ACTIVE_S = 5.0  # a stretch with less coarse activity than this is not examined


@dataclass(frozen=True)
class Region:
    """The part of a long input to decode in full (input seconds), and the speech already found in
    it while scouting (input seconds; found by the scouting stage with its own settings)."""

    start_s: float
    end_s: float
    speech: np.ndarray


def activity(info: SourceInfo, envelope: EnvelopeBuilder | None = None) -> np.ndarray:
    """Coarse speech activity per 0.9 s of a long input (fraction 0-1), decoded in blocks (each
    block's peaks also go to ``envelope``, for the report's waveform).

    Each block is decoded at its own rate; only its louder channel (the voiced side, if one-sided)
    is brought to 8 kHz, at soxr's quick quality (ranking needs no more).
    """
    import soxr

    from .speech import coarse_activity

    per_unit: list[np.ndarray] = []
    carry = np.zeros(0, np.float32)
    unit = 30 * (3 * ACTIVITY_RATE // 100)
    for block in iter_blocks(info):
        if envelope is not None:
            envelope.add(block)
        # every 4th sample is plenty to tell which side is louder
        loudest = int(np.argmax([float(np.dot(r[::4], r[::4])) for r in block])) if block.shape[0] > 1 else 0
        x = block[loudest]
        if info.sample_rate != ACTIVITY_RATE:
            x = soxr.resample(x, info.sample_rate, ACTIVITY_RATE, quality="QQ")
        x = np.concatenate([carry, np.asarray(x, dtype=np.float32)])
        whole = len(x) // unit * unit
        carry = x[whole:]
        if whole == 0:
            continue
        act = coarse_activity(x[:whole], rate=ACTIVITY_RATE)
        per_unit.append(act.reshape(-1, 30).mean(axis=1))
    return np.concatenate(per_unit) if per_unit else np.zeros(0)


def best_region(
    info: SourceInfo, prefix: Pipeline, stage: Scouting, envelope: EnvelopeBuilder | None = None
) -> Region | None:
    """Rank stretches of ``stage.span_s()`` by coarse activity, then run ``prefix`` (the chain up to
    and including ``stage``) on the best-ranked ones only, at 16 kHz; the region around the
    best-scoring cut, or None when no stretch gives one."""
    span_s = stage.span_s()
    rate = SCOUT_RATE if info.sample_rate > SCOUT_RATE else None
    act = activity(info, envelope)
    span = int(round(span_s / UNIT_S))
    if len(act) < span:
        return None
    density = np.convolve(act, np.ones(span), mode="valid")  # active seconds / UNIT_S in each stretch
    order = np.argsort(-density, kind="stable")
    taken: list[int] = []
    best = None
    for start in order:
        if len(taken) >= MAX_STRETCHES or density[start] * UNIT_S < MIN_ACTIVE_S:
            break
        if any(abs(int(start) - t) < span for t in taken):
            continue
        taken.append(int(start))
        lo = max(float(start) * UNIT_S - MARGIN_S, 0.0)
        hi = min(float(start) * UNIT_S + span_s + MARGIN_S, info.duration_s)
        try:
            cut = prefix(decode(info, rate=rate, start_s=lo, end_s=hi)).cut
        except PipelineError:
            continue
        if cut is None:
            continue
        if best is None or cut.score > best.score:
            best = cut
        if stage.qualifies(best) and len(taken) >= MIN_STRETCHES:
            break
    if best is None:
        return None
    lo, hi = max(best.start_s - REGION_PAD_S, 0.0), min(best.end_s + REGION_PAD_S, info.duration_s)
    segs = best.input_speech.segments
    keep = (segs[:, 1] > lo) & (segs[:, 0] < hi)
    return Region(lo, hi, segs[keep])
