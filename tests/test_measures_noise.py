"""measures.noise: SNR, clipping and DC offset of real speech with a degradation added at known strength."""

from __future__ import annotations

import numpy as np
import pytest
import quality_signals as qs
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import speech
from pipeline.measures.frames import as_mono
from pipeline.measures.noise import clipping, dc_offset, snr_estimate

R = 16000



@pytest.mark.parametrize("kind", ["white", "pink"])
@pytest.mark.parametrize("snr", [10.0, 20.0])
def test_snr_estimate_within_3_db(kind: str, snr: float):
    x, segs = qs.reader()
    noise = qs.white(len(x)) if kind == "white" else qs.pink(len(x))
    y = qs.mix_at_snr(x, noise, snr, R, segs)
    got, method = snr_estimate(as_mono(y), R, speech.detect(y, R).segments)
    assert method == "pauses"
    assert abs(got - snr) <= 3.0, got


def test_snr_falls_back_to_quiet_frames_without_pauses():
    x, segs = qs.reader()
    y = qs.mix_at_snr(x, qs.white(len(x)), 10.0, R, segs)
    snr, method = snr_estimate(y, R, np.array([[0.0, len(y) / R]]))
    assert method == "percentile"
    assert 4.0 <= snr <= 16.0


def test_snr_of_silence_and_empty_input_does_not_fail():
    assert snr_estimate(np.zeros(100), R, np.zeros((0, 2)))[1] == "none"
    assert snr_estimate(np.zeros(R), R, np.zeros((0, 2))) == (0.0, "none")


@pytest.mark.parametrize("fraction", [0.001, 0.01, 0.05])
def test_clipping_ratio_matches_added_clipping(fraction: float):
    x, _ = qs.reader()
    ratio, run = clipping(qs.clip_fraction(x, fraction))
    assert ratio == pytest.approx(fraction, rel=0.1)
    assert run >= 3


def test_clean_speech_has_no_clipping():
    x, _ = qs.reader()
    assert clipping(x) == (0.0, 0)


def test_dc_offset_is_measured():
    x, _ = qs.reader()
    base = dc_offset(x)
    assert dc_offset(x + 0.05) == pytest.approx(base + 0.05, abs=1e-4)


@settings(max_examples=10, deadline=None)
@given(gain_db=st.floats(-30.0, 0.0))
def test_snr_does_not_depend_on_gain(gain_db: float):
    x, segs = qs.reader()
    y = qs.mix_at_snr(x, qs.pink(len(x)), 15.0, R, segs)
    g = 10 ** (gain_db / 20)
    assert snr_estimate(g * y, R, segs)[0] == pytest.approx(snr_estimate(y, R, segs)[0], abs=0.05)
