"""Property tests (hypothesis): invariants that must hold for any input."""

from __future__ import annotations

import numpy as np
from conftest import load
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import speech
from pipeline.measures.loudness import integrated_lufs, true_peak_dbtp
from stages.encode import quantize16
from stages.loudness import normalize
from stages.resample import resample
from stages.window import candidates, render

SPEECH, SR = load("speech_librivox_16k.wav")
SLOW = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SLOW
@given(
    rate_in=st.sampled_from([16000, 22050, 24000, 44100, 48000]),
    rate_out=st.sampled_from([16000, 24000, 32000, 48000]),
    seconds=st.floats(0.2, 3.0),
)
def test_resampling_keeps_duration(rate_in: int, rate_out: int, seconds: float):
    x = np.random.default_rng(0).standard_normal((1, int(seconds * rate_in))).astype(np.float32) * 0.1
    y = resample(x, rate_in, rate_out)
    assert abs(y.shape[1] / rate_out - x.shape[1] / rate_in) <= 1.0 / min(rate_in, rate_out) + 1e-9


@SLOW
@given(gain_db=st.floats(-30.0, 10.0), target=st.floats(-30.0, -14.0))
def test_normalising_twice_changes_nothing(gain_db: float, target: float):
    x = SPEECH[0, : SR * 8] * np.float32(10 ** (gain_db / 20))
    once, _, lufs1, tp1 = normalize(x, SR, target, -1.5, 60.0)
    twice, gain2, lufs2, _ = normalize(once, SR, target, -1.5, 60.0)
    assert abs(lufs1 - target) < 0.5 and tp1 <= -1.5 + 0.05
    assert abs(gain2) < 0.1 and abs(lufs2 - target) < 0.5
    assert np.max(np.abs(twice - once)) < 0.01


@SLOW
@given(st.lists(st.tuples(st.floats(0.3, 6.0), st.floats(0.05, 3.5)), min_size=1, max_size=12))
def test_chosen_windows_lie_inside_the_speech_they_report(parts: list[tuple[float, float]]):
    # segments of given lengths separated by given pauses
    t, segs = 0.3, []
    for length, pause in parts:
        segs.append([t, t + length])
        t += length + pause
    segs_arr = np.array(segs)
    duration = t + 0.3
    levels = np.zeros(len(segs))
    for c in candidates(
        segs_arr, levels, duration, min_s=10, max_s=20, max_pause_s=2.0, merge_gap_s=0.5, edge_s=0.2, shorten_to_s=0.5
    ):
        first, last = segs_arr[c.first], segs_arr[c.last]
        assert c.start_s <= first[0] and c.end_s >= last[1]
        assert 10 <= c.duration_s <= 20 + 1e-9
        assert c.longest_pause_s <= 2.0
        assert c.speech_s == np.sum(segs_arr[c.first : c.last + 1, 1] - segs_arr[c.first : c.last + 1, 0])
        # edges in silence: never inside a neighbouring segment
        if c.first > 0:
            assert c.start_s >= segs_arr[c.first - 1, 1]
        if c.last + 1 < len(segs_arr):
            assert c.end_s <= segs_arr[c.last + 1, 0]


@SLOW
@given(st.lists(st.tuples(st.floats(0.0, 20.0), st.floats(0.01, 3.0)), min_size=1, max_size=6))
def test_render_length_matches_pieces(pieces_raw: list[tuple[float, float]]):
    pieces, t = [], 0.0
    for gap, length in pieces_raw:
        pieces.append((t + gap, t + gap + length))
        t += gap + length
    x = np.ones(int((t + 1) * 1000), np.float32)
    y, offsets = render(x, 1000, tuple(pieces), 0.005)
    expected = sum(round(b * 1000) - round(a * 1000) for a, b in pieces) - 5 * (len(pieces) - 1)
    assert abs(len(y) - expected) <= len(pieces)
    assert offsets == sorted(offsets)


@SLOW
@given(st.floats(-60.0, 0.0))
def test_quantize_is_on_the_16bit_grid_and_close(level_db: float):
    x = SPEECH[:, : SR * 2] * np.float32(10 ** (level_db / 20))
    q = quantize16(x)
    assert np.all(np.round(q * 32768) == q * 32768)
    assert np.max(np.abs(q - x)) <= 2.0 / 32768


@SLOW
@given(st.floats(0.0, 1.0))
def test_merge_gaps_never_increases_segment_count(gap: float):
    r = speech.detect(SPEECH[0, : SR * 10], SR)
    merged = speech.merge_gaps(r.segments, gap)
    assert len(merged) <= len(r.segments)
    assert np.isclose(merged[0, 0], r.segments[0, 0]) and np.isclose(merged[-1, 1], r.segments[-1, 1])


def test_loudness_measures_are_consistent():
    assert integrated_lufs(np.zeros(SR, np.float32), SR) == float("-inf")
    # a sine at fs/4 sampled 45 degrees off its peaks: samples reach 0.707, the true peak is 1.0
    n = np.arange(48000)
    x = np.sin(2 * np.pi * n / 4 + np.pi / 4).astype(np.float32)
    assert 20 * np.log10(np.max(np.abs(x))) < -2.9
    assert abs(true_peak_dbtp(x)) < 0.3
