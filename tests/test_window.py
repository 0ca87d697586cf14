"""window: the best 10-20 s, inside speech, edges in silence, long pauses shortened only when needed."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load

from pipeline import speech
from pipeline.clip import Clip, SourceInfo
from pipeline.errors import PipelineError
from stages.window import Candidate, Window, candidates, split_long

X, SR = load("speech_librivox_16k.wav")


def _clip(x: np.ndarray) -> Clip:
    return Clip(x, SR, SourceInfo("t.wav", "wav", "pcm_s16le", 16, 1, SR, x.shape[-1] / SR, 0))


def test_window_on_read_speech():
    stage = Window()
    out = stage(_clip(X))
    cut = out.cut
    assert cut is not None and out.speech is not None
    seg = cut.as_dict()
    assert 10.0 <= out.duration_s <= 20.0
    assert seg["end_s"] - seg["start_s"] == pytest.approx(out.duration_s, abs=0.01)
    assert cut.speech_s >= 10.5 and cut.longest_run_s > 5.5 and cut.longest_pause_s <= 2.0
    assert stage.qualifies(cut)
    assert cut.pieces == ((cut.start_s, cut.end_s),) or abs(cut.pieces[0][0] - cut.start_s) < 1e-3
    # edges lie in silence: the input has no speech within 30 ms of either edge
    rep = speech.detect(X[0], SR)
    for t in (seg["start_s"], seg["end_s"]):
        assert not any(a + 0.03 < t < b - 0.03 for a, b in rep.segments), t
    # speech segments reported in the clip's own time line are inside it
    assert all(0 <= a < b <= out.duration_s + 1e-6 for a, b in out.speech.segments)
    # and the input's speech map, in input seconds, covers the speech of the cut
    assert cut.input_speech.speech_s >= cut.speech_s


def test_prefers_steady_level():
    # the same speech twice, the second copy with its level jumping by 12 dB phrase to phrase
    rep = speech.detect(X[0], SR)
    jumpy = X[0].copy()
    for k, (a, b) in enumerate(rep.segments):
        jumpy[int(a * SR) : int(b * SR)] *= np.float32(4.0 if k % 2 else 1.0)
    gap = np.zeros(SR * 3, np.float32)
    y = np.concatenate([jumpy, gap, X[0]])
    cut = Window(shorten_pauses=False)(_clip(y)).cut
    assert cut is not None and cut.start_s >= len(jumpy) / SR  # the steady copy wins


def test_too_little_speech_is_silent_error():
    x, sr = load("speech_arctic_awb_16k.wav")
    with pytest.raises(PipelineError) as err:
        Window()(Clip(x, sr, SourceInfo("a.wav", "wav", "pcm_s16le", 16, 1, sr, x.shape[1] / sr, 0)))
    assert err.value.code == "Audio.AudioSilentError" and err.value.metrics["input_speech_s"] < 5


def test_pauses_shortened_only_when_needed():
    rep = speech.detect(X[0], SR)
    parts = []
    for a, b in rep.runs:
        parts += [X[0, int(a * SR) : int(b * SR)], np.zeros(SR * 3, np.float32)]
    spaced = np.concatenate(parts)
    out = Window()(_clip(spaced))
    assert out.cut is not None and out.cut.pauses_shortened > 0 and len(out.cut.pieces) == out.cut.pauses_shortened + 1
    assert [w.code for w in out.warnings] == ["pause_shortened"]
    assert Window()(_clip(X)).warnings == ()  # natural pauses are left alone


def test_split_long_cuts_at_quiet_points():
    segs = np.array([[0.0, 26.0]])
    out = split_long(segs, X[0], SR, 12.0)
    assert len(out) >= 3 and np.all(np.diff(out, axis=1) <= 12.0)
    assert out[0, 0] == 0.0 and out[-1, 1] == 26.0


def test_candidates_measure_runs_with_both_gaps():
    """Pauses of 0.4 s join speech at the 0.5 s merge gap, not at the 0.3 s strict one."""
    segs = np.array([[0.2, 3.2], [3.6, 6.6], [7.0, 10.0], [10.4, 13.4]])

    def whole(strict_gap_s: float) -> Candidate:
        found = candidates(segs, np.zeros(4), 14.0, min_s=10, max_s=20, max_pause_s=2.0, merge_gap_s=0.5, edge_s=0.2,
                           shorten_to_s=None, strict_gap_s=strict_gap_s)
        return next(c for c in found if c.first == 0 and c.last == 3)

    strict, loose = whole(0.3), whole(0.5)
    assert strict.longest_run_s == loose.longest_run_s == loose.strict_run_s == pytest.approx(13.2)
    assert strict.strict_run_s == pytest.approx(3.0)
    assert not Window().meets_rules(strict.speech_s, strict.longest_run_s, strict.strict_run_s)
    assert Window(strict_gap_s=0.5).meets_rules(loose.speech_s, loose.longest_run_s, loose.strict_run_s)
    # a window that misses only the margin still ranks above one with more speech and no 5 s run
    stage = Window()
    no_run = Candidate(0, 5, ((0.0, 19.0),), 19.0, 17.0, 4.0, 0.4, 0.0, 0, strict_run_s=4.0)
    assert stage.score(strict) > stage.score(no_run) and no_run.speech_s > strict.speech_s
    with pytest.raises(ValueError, match="strict_gap_s"):
        Window(strict_gap_s=0.6)  # looser than the merge gap: not a margin


def test_window_holds_a_run_that_survives_a_stricter_merge_gap():
    """Real reading in two takes: first short phrases (2.7-2.9 s) with 0.45 s pauses, denser in
    speech but with no run over 5 s unless 0.45 s pauses join speech; then the reader's natural
    take, with 5.7-6.7 s phrases. Only the natural take holds a run over 5 s when pauses over
    0.3 s break runs, so the window takes it; with the strict reading off, the denser take wins."""
    rep = speech.detect(X[0], SR)
    short = [s for s in rep.segments if s[1] - s[0] < 3.5]  # the reader's 2.7 s and 2.9 s phrases
    assert len(short) >= 2
    pause = np.zeros(int(0.45 * SR), np.float32)
    dense: list[np.ndarray] = []
    for k in range(6):
        a, b = short[k % 2]
        dense += [X[0, int(a * SR) : int(b * SR)], pause]
    y = np.concatenate([*dense, np.zeros(3 * SR, np.float32), X[0]])
    boundary = sum(len(p) for p in dense) / SR
    # the dense take's pauses, as detected, break runs at 0.3 s and join them at 0.5 s
    found = speech.detect(y, SR)
    inside = found.segments[found.segments[:, 1] < boundary]
    pauses = inside[1:, 0] - inside[:-1, 1]
    assert len(pauses) == 5 and np.all((pauses > 0.3) & (pauses <= 0.5))
    strict = Window(quality_weight=0.0)(_clip(y[np.newaxis, :])).cut
    loose = Window(quality_weight=0.0, strict_gap_s=0.5)(_clip(y[np.newaxis, :])).cut
    assert strict is not None and loose is not None
    assert strict.start_s > boundary and strict.strict_run_s > 5.0 and strict.longest_run_s > 5.5
    assert loose.end_s < boundary and loose.speech_s > strict.speech_s
