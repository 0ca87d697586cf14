"""window: cut the best 10-20 s of continuous, steady speech, with edges in silence valleys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from pipeline.clip import Clip, Cut, Fact, SpeechMap
from pipeline.errors import service_error
from pipeline.limits import MAX_DURATION_S, MIN_RUN_S, MIN_SPEECH_S
from pipeline.registry import register
from pipeline.stage import option


@dataclass(frozen=True)
class Candidate:
    """Segments ``first..last`` (inclusive) as one window; times in the clip's seconds."""

    first: int
    last: int
    pieces: tuple[tuple[float, float], ...]  # source intervals joined with crossfades
    duration_s: float
    speech_s: float
    longest_run_s: float
    longest_pause_s: float
    spread_db: float
    shortened: int  # pauses shortened
    strict_run_s: float = 0.0  # the longest run when only pauses up to the strict gap join speech

    @property
    def start_s(self) -> float:
        return self.pieces[0][0]

    @property
    def end_s(self) -> float:
        return self.pieces[-1][1]


def split_long(segments: np.ndarray, x: np.ndarray, rate: int, max_len_s: float) -> np.ndarray:
    """Split segments longer than ``max_len_s`` at their quietest 30 ms point (a breath, a stop)."""
    out: list[tuple[float, float]] = []
    hop = max(1, int(0.03 * rate))
    stack = [tuple(s) for s in segments[::-1]]
    while stack:
        a, b = stack.pop()
        if b - a <= max_len_s:
            out.append((a, b))
            continue
        lo, hi = int((a + 0.25 * (b - a)) * rate), int((a + 0.75 * (b - a)) * rate)
        n = max((hi - lo) // hop, 1)
        frames = x[lo : lo + n * hop].reshape(n, hop) if hi - lo >= hop else x[lo:hi].reshape(1, -1)
        k = int(np.argmin(np.mean(frames.astype(np.float64) ** 2, axis=1)))
        cut = (lo + k * hop + hop / 2) / rate
        stack.append((cut, b))
        stack.append((a, cut))
    return np.array(out, dtype=np.float64).reshape(-1, 2)


def segment_levels(x: np.ndarray, rate: int, segments: np.ndarray) -> np.ndarray:
    """RMS level (dB) of each speech segment."""
    out = np.empty(len(segments))
    for k, (a, b) in enumerate(segments):
        seg = x[int(a * rate) : max(int(b * rate), int(a * rate) + 1)]
        out[k] = 10 * np.log10(np.mean(np.square(seg, dtype=np.float64)) + 1e-12)
    return out


def candidates(
    segments: np.ndarray,
    levels: np.ndarray,
    duration_s: float,
    *,
    min_s: float,
    max_s: float,
    max_pause_s: float,
    merge_gap_s: float,
    edge_s: float,
    shorten_to_s: float | None,
    strict_gap_s: float | None = None,
) -> list[Candidate]:
    """Every window of consecutive segments that fits in ``max_s`` with no pause over ``max_pause_s``.

    Each candidate's longest run joins pauses up to ``merge_gap_s``; its strict run, pauses up to
    ``strict_gap_s`` (``merge_gap_s`` when None).

    With ``shorten_to_s``, pauses longer than that are cut down to it first (the window is then
    rendered from several pieces). Edges take up to ``edge_s`` of the silence around the
    speech, never more than half of the neighbouring pause, so they never cut into a word.
    """
    n = len(segments)
    strict_gap = merge_gap_s if strict_gap_s is None else strict_gap_s
    out: list[Candidate] = []
    for i in range(n):
        prev_end = segments[i - 1, 1] if i > 0 else 0.0
        lead = min(edge_s, (segments[i, 0] - prev_end) / (2 if i > 0 else 1))
        start = segments[i, 0] - max(lead, 0.0)
        pieces_start = start
        pieces: list[tuple[float, float]] = []
        length = 0.0  # rendered length before the current piece
        speech = 0.0
        run = 0.0
        longest_run = 0.0
        strict_run = 0.0
        longest_strict = 0.0
        longest_pause = 0.0
        shortened = 0
        for j in range(i, n):
            if j > i:
                gap = segments[j, 0] - segments[j - 1, 1]
                if shorten_to_s is not None and gap > shorten_to_s:
                    half = shorten_to_s / 2
                    pieces.append((pieces_start, segments[j - 1, 1] + half))
                    length += segments[j - 1, 1] + half - pieces_start
                    pieces_start = segments[j, 0] - half
                    gap = shorten_to_s
                    shortened += 1
                if gap > max_pause_s:
                    break
                longest_pause = max(longest_pause, gap)
                run = run + gap if gap <= merge_gap_s else 0.0
                strict_run = strict_run + gap if gap <= strict_gap else 0.0
            speech += segments[j, 1] - segments[j, 0]
            run += segments[j, 1] - segments[j, 0]
            strict_run += segments[j, 1] - segments[j, 0]
            longest_run = max(longest_run, run)
            longest_strict = max(longest_strict, strict_run)
            next_start = segments[j + 1, 0] if j + 1 < n else duration_s
            tail = min(edge_s, (next_start - segments[j, 1]) / (2 if j + 1 < n else 1))
            end = segments[j, 1] + max(tail, 0.0)
            total = length + (end - pieces_start)
            if total > max_s:
                break
            if total >= min_s:
                lv = levels[i : j + 1]
                out.append(
                    Candidate(
                        first=i,
                        last=j,
                        pieces=(*pieces, (pieces_start, end)),
                        duration_s=total,
                        speech_s=speech,
                        longest_run_s=longest_run,
                        longest_pause_s=longest_pause,
                        spread_db=float(np.std(lv)) if len(lv) > 1 else 0.0,
                        shortened=shortened,
                        strict_run_s=longest_strict,
                    )
                )
    return out


def render(
    x: np.ndarray, rate: int, pieces: tuple[tuple[float, float], ...], crossfade_s: float
) -> tuple[np.ndarray, list[float]]:
    """Join source intervals with equal-power crossfades; returns audio and each piece's output offset."""
    xf = max(int(crossfade_s * rate), 1)
    out = np.zeros(0, dtype=np.float32)
    offsets: list[float] = []
    for a, b in pieces:
        part = x[max(int(round(a * rate)), 0) : int(round(b * rate))].astype(np.float32)
        if out.size == 0:
            offsets.append(0.0)
            out = part
            continue
        k = min(xf, out.size, part.size)
        offsets.append((out.size - k) / rate)
        t = np.linspace(0.0, np.pi / 2, k, dtype=np.float32)
        joined = out[-k:] * np.cos(t) + part[:k] * np.sin(t)
        out = np.concatenate([out[:-k], joined, part[k:]])
    return out, offsets


@register
@dataclass(frozen=True)
class Window:
    """Cut the best ``min_s``-``max_s`` window: most speech, one run over ``min_run_s``, steady level.

    The run must also be over the service's 5 s when only pauses up to ``strict_gap_s`` join
    speech (a margin against a stricter reading of "continuous" than ``merge_gap_s``); a window
    that misses only that margin still ranks above any that fails the service's rules.

    Window edges lie in silence valleys (never mid-word); no pause inside is longer than
    ``max_pause_s``. With ``shorten_pauses`` (used only when no window qualifies without it),
    pauses longer than ``pause_to_s`` are cut down with short crossfades and a
    ``pause_shortened`` warning. Raises Audio.AudioSilentError when the whole recording holds
    ``min_input_speech_s`` of speech or less. Provides the cut (the window in input seconds) and
    the speech map of the clip it cuts; uses a speech map the clip already has (found while
    scouting a long input) instead of detecting speech again.
    """

    name: ClassVar[str] = "window"
    changes_audio: ClassVar[bool] = True
    needs: ClassVar[frozenset[Fact]] = frozenset()
    provides: ClassVar[frozenset[Fact]] = frozenset({"speech", "cut"})

    min_s: float = option(10.0, "shortest window (seconds)", above=0.0, max=MAX_DURATION_S)
    max_s: float = option(20.0, "longest window (seconds)", above=0.0, max=MAX_DURATION_S)
    min_speech_s: float = option(10.5, "speech the window must hold (seconds; the service needs more than 10)", min=MIN_SPEECH_S, max=MAX_DURATION_S)
    min_run_s: float = option(5.5, "the window must hold a continuous run longer than this (seconds; service: 5)", min=MIN_RUN_S, max=MAX_DURATION_S)
    min_input_speech_s: float = option(
        MIN_SPEECH_S, "refuse (Audio.AudioSilentError) an input holding this much speech or less (seconds)",
        min=0.0, max=MAX_DURATION_S,
    )
    max_pause_s: float = option(2.0, "longest pause allowed inside the window (seconds)", above=0.0, max=10.0)
    merge_gap_s: float = option(0.5, "pauses shorter than this keep a speech run continuous (seconds)", min=0.0, max=2.0)
    strict_gap_s: float = option(
        0.3,
        "the window must also hold a run longer than the service's 5 s when only pauses up to this join speech: "
        "a margin in case the service breaks runs at shorter pauses than merge_gap_s (seconds; docs/speech.md)",
        min=0.0, max=2.0,
    )
    edge_s: float = option(0.2, "silence kept before the first and after the last word (seconds)", min=0.0, max=2.0)
    shorten_pauses: bool = option(True, "shorten long pauses when no window qualifies without it")
    pause_to_s: float = option(0.5, "length long pauses are shortened to (seconds)", above=0.0, max=10.0)
    crossfade_s: float = option(0.01, "crossfade at each shortened pause (seconds)", above=0.0, max=0.5)
    steadiness_weight: float = option(0.3, "score penalty per dB of level spread between segments", min=0.0, max=100.0)
    quality_weight: float = option(
        1.0, "among near-best windows, score penalty per unit of quality shortfall (noise, music, voices)",
        min=0.0, max=100.0,
    )
    quality_candidates: int = option(6, "how many near-best windows get the quality measure (0 = off)", min=0, max=50)
    vad_threshold: float = option(0.5, "Silero speech probability that starts a speech segment (0-1)", above=0.0, max=0.99)

    def __post_init__(self) -> None:
        if not 0 < self.min_s < self.max_s:
            raise ValueError("need 0 < min_s < max_s")
        if not 0 < self.min_run_s <= self.min_speech_s <= self.max_s:
            raise ValueError("need 0 < min_run_s <= min_speech_s <= max_s")
        if self.pause_to_s <= 0 or self.pause_to_s > self.max_pause_s:
            raise ValueError("pause_to_s must be positive and at most max_pause_s")
        if not 0 < self.crossfade_s < self.pause_to_s / 2:
            raise ValueError("crossfade_s must be positive and under half of pause_to_s")
        if not 0 <= self.strict_gap_s <= self.merge_gap_s:
            raise ValueError("strict_gap_s must be between 0 and merge_gap_s")

    def meets_rules(self, speech_s: float, longest_run_s: float, strict_run_s: float) -> bool:
        """Whether a window with this much speech, this longest run and this longest strict run
        (pauses up to ``strict_gap_s`` joined) meets every rule."""
        return speech_s >= self.min_speech_s and longest_run_s > self.min_run_s and strict_run_s > MIN_RUN_S

    def qualifies(self, cut: Cut) -> bool:
        """Whether ``cut`` (one this stage made) meets every rule: the runner stops scouting there."""
        return self.meets_rules(cut.speech_s, cut.longest_run_s, cut.strict_run_s)

    def span_s(self) -> float:
        """The longest stretch one window spans: the runner scouts long inputs in stretches this long."""
        return self.max_s

    def score(self, c: Candidate) -> float:
        """Most speech and a steady level first, among the windows that meet every rule; then those
        that miss only the strict reading's margin (validate would still pass them); then the rest."""
        rules = c.speech_s >= self.min_speech_s and c.longest_run_s > self.min_run_s
        tier = (1000.0 if c.strict_run_s > MIN_RUN_S else 500.0) if rules else 0.0
        return tier + c.speech_s - self.steadiness_weight * c.spread_db - 0.5 * c.shortened

    def rerank(
        self, x: np.ndarray, rate: int, found: list[Candidate], segments: np.ndarray, x16: np.ndarray | None = None
    ) -> Candidate | None:
        """The best candidate once the few near-best ones are also judged on quality (SNR, level
        spread, clipping, music in the pauses, a second voice): the cleanest part wins a near tie."""
        if not found:
            return None
        ranked = sorted(found, key=self.score, reverse=True)
        top = self.score(ranked[0])
        near = [c for c in ranked if self.score(c) >= top - 2.0][: self.quality_candidates]
        if len(near) < 2 or self.quality_weight == 0:
            return ranked[0]
        from pipeline.measures.summary import window_quality_penalty
        from pipeline.measures.voices import MFCC_HOP_S, mfcc, mfcc_slice
        from pipeline.speech import VAD_RATE, to_vad_rate

        if x16 is None:
            x16 = to_vad_rate(x, rate)  # once, not once per candidate
        # MFCCs once, over the stretch the near-best candidates span (not the whole input); each
        # candidate takes its rows. Frames are 10 ms apart and not centred, so the stretch starting
        # on a frame boundary gives exactly the rows of the whole input.
        first = int(round(min(c.pieces[0][0] for c in near) / MFCC_HOP_S))
        end = int(max(c.pieces[-1][1] for c in near) * VAD_RATE) + 400 + 160
        coefs = mfcc(x16[160 * first : end])

        def judged(c: Candidate) -> float:
            a, b = c.pieces[0][0], c.pieces[-1][1]
            inside = [[max(s, a) - a, min(e, b) - a] for s, e in segments if e > a and s < b]
            piece = x16[int(a * VAD_RATE) : int(b * VAD_RATE)]
            pen = window_quality_penalty(piece, VAD_RATE, inside, mfccs=mfcc_slice(coefs, a, len(piece), first))
            return self.score(c) - self.quality_weight * pen

        return max(near, key=judged)

    def choose(self, x: np.ndarray, rate: int, segments: np.ndarray, x16: np.ndarray | None = None) -> Candidate | None:
        """The best window of ``x`` given its speech ``segments``; ``x16`` is ``x`` at 16 kHz if the
        caller has it already."""
        duration = len(x) / rate
        segs = split_long(segments, x, rate, self.max_s - 2 * self.edge_s - 0.5)
        levels = segment_levels(x, rate, segs)
        kw: dict[str, Any] = {
            "min_s": self.min_s,
            "max_s": self.max_s,
            "max_pause_s": self.max_pause_s,
            "merge_gap_s": self.merge_gap_s,
            "strict_gap_s": self.strict_gap_s,
            "edge_s": self.edge_s,
        }
        plain = candidates(segs, levels, duration, shorten_to_s=None, **kw)
        best = self.rerank(x, rate, plain, segs, x16)
        qualified = best is not None and self.meets_rules(best.speech_s, best.longest_run_s, best.strict_run_s)
        if not qualified and self.shorten_pauses:
            short = candidates(segs, levels, duration, shorten_to_s=self.pause_to_s, **kw)
            alt = self.rerank(x, rate, short, segs, x16)
            if alt is not None and (best is None or self.score(alt) > self.score(best)):
                best = alt
        if best is None and len(segs):  # too little speech for min_s: take it all, validate refuses
            best = Candidate(
                0,
                len(segs) - 1,
                ((max(segs[0, 0] - self.edge_s, 0), min(segs[-1, 1] + self.edge_s, duration)),),
                duration,
                float(np.sum(segs[:, 1] - segs[:, 0])),
                0.0,
                0.0,
                0.0,
                0,
            )
        return best

    def speech(self, clip: Clip, x16: np.ndarray) -> SpeechMap:
        """Speech in the clip: the clip's speech map when it has one (found ahead, e.g. while the
        runner scouted a long input with this stage), with its runs joined by this stage's merge
        gap; else detected."""
        from pipeline import speech

        duration = len(x16) / speech.VAD_RATE
        if clip.speech is not None:
            segs = clip.speech.segments
            segs = np.clip(segs[(segs[:, 1] > 0) & (segs[:, 0] < duration)], 0.0, duration)
            segs = segs[segs[:, 1] > segs[:, 0]]
            return SpeechMap(segments=segs, runs=speech.merge_gaps(segs, self.merge_gap_s), duration_s=duration)
        return speech.detect(x16, speech.VAD_RATE, threshold=self.vad_threshold, merge_gap_s=self.merge_gap_s)

    def __call__(self, clip: Clip) -> Clip:
        from pipeline import speech

        x = clip.samples[0]
        x16 = speech.to_vad_rate(x, clip.sample_rate)  # detection and the quality re-rank share it
        report = self.speech(clip, x16)
        found = {
            "input_speech_s": round(report.speech_s, 3),
            "input_longest_speech_s": round(report.longest_speech_s, 3),
            "input_longest_pause_s": round(report.longest_pause_s, 3),
        }
        if report.speech_s <= self.min_input_speech_s:
            raise service_error(
                "Audio.AudioSilentError",
                f"only {report.speech_s:.1f} s of speech found; more than {self.min_input_speech_s:g} s needed",
                hint="no usable voice: record 20-30 s of one person reading aloud, without music or noise",
                metrics={**clip.metrics, **found},
                speech=SpeechMap(segments=report.segments + clip.offset_s, runs=report.runs + clip.offset_s,
                                 duration_s=report.duration_s),
            )
        best = self.choose(x, clip.sample_rate, report.segments, x16)
        if best is None:  # pragma: no cover - speech_s > 10 implies segments
            raise service_error("Audio.AudioSilentError", "no speech segments found", metrics=found)
        audio, offsets = render(x, clip.sample_rate, best.pieces, self.crossfade_s)
        inside = []
        for (a, b), off in zip(best.pieces, offsets):
            for s, e in report.segments:
                lo, hi = max(s, a), min(e, b)
                if hi > lo:
                    inside.append([round(float(off + lo - a), 4), round(float(off + hi - a), 4)])
        from pipeline.speech import merge_gaps

        off = clip.offset_s
        found_in_input = [[round(float(off + a), 4), round(float(off + b), 4)] for a, b in report.segments]
        cut = Cut(
            start_s=round(float(off + best.start_s), 3),
            end_s=round(float(off + best.end_s), 3),
            pieces=tuple((round(float(off + a), 4), round(float(off + b), 4)) for a, b in best.pieces),
            score=round(self.score(best), 3),
            speech_s=round(best.speech_s, 3),
            longest_run_s=round(best.longest_run_s, 3),
            strict_run_s=round(best.strict_run_s, 3),
            longest_pause_s=round(best.longest_pause_s, 3),
            level_spread_db=round(best.spread_db, 2),
            pauses_shortened=best.shortened,
            input_speech=SpeechMap(segments=np.asarray(found_in_input), runs=report.runs + off, duration_s=report.duration_s),
        )
        inside_segs = np.asarray(inside, dtype=np.float64).reshape(-1, 2)
        inside_runs = merge_gaps(inside_segs, self.merge_gap_s)
        out = clip.replace(
            samples=audio[np.newaxis, :],
            offset_s=off + best.start_s,
            speech=SpeechMap(segments=inside_segs, runs=inside_runs, duration_s=len(audio) / clip.sample_rate),
            cut=cut,
        ).measured(**found)
        if best.shortened:
            out = out.warn(
                "pause_shortened",
                f"{best.shortened} pause(s) longer than {self.pause_to_s:.1f} s shortened to {self.pause_to_s:.1f} s",
                "for the most natural clone, read 20 s without long stops",
            )
        return out
