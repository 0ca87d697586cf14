"""measures.summary: every measure on any input, and the window penalty's ranking of real speech."""

from __future__ import annotations

import numpy as np
import pytest
import quality_signals as qs
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.measures.summary import measure, window_quality_penalty

R = 16000



def test_window_penalty_prefers_the_clean_window():
    x, segs = qs.reader()
    noisy = qs.mix_at_snr(x, qs.white(len(x)), 5.0, R, segs)
    clean_p = window_quality_penalty(x, R, segs)
    assert clean_p < window_quality_penalty(noisy, R, segs)
    assert clean_p < window_quality_penalty(qs.ramp(x, 20.0), R, segs)
    assert window_quality_penalty(np.vstack([x, noisy]), R, segs) == pytest.approx(clean_p)


@settings(max_examples=25, deadline=None)
@given(
    rate=st.sampled_from([16000, 22050, 44100, 48000]),
    seconds=st.floats(0.0, 3.0),
    seed=st.integers(0, 2**16),
)
def test_measure_never_fails_on_any_rate_or_length(rate: int, seconds: float, seed: int):
    y = (np.random.default_rng(seed).standard_normal(int(seconds * rate)) * 0.1).astype(np.float32)
    m = measure(y, rate, np.array([[0.0, seconds / 2]]))
    assert 0.0 <= m["clipped_ratio"] <= 1.0
    assert m["bandwidth_hz"] <= rate / 2
