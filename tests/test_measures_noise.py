"""measures.noise: SNR, clipping and DC offset of real speech with a degradation added at known strength."""

from __future__ import annotations

import numpy as np
import pytest
import quality_signals as qs
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import speech
from pipeline.measures.frames import as_mono
from pipeline.measures.noise import clipping, dc_offset, snr, snr_estimate, wada_snr

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


def _readers() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    al = qs.normalize_peak(qs.load("speech_allison_8k.flac")[: 20 * R])
    return {"librivox": qs.reader(), "chan3": qs.reader_without_hum(), "allison": (al, speech.detect(al, R).segments)}


def _noise(kind: str, n: int) -> np.ndarray:
    return {"white": qs.white, "pink": qs.pink, "babble": qs.babble}[kind](n)


@pytest.mark.parametrize("reader", ["librivox", "chan3", "allison"])
@pytest.mark.parametrize("kind", ["pink", "babble"])
@pytest.mark.parametrize("added", [0.0, 5.0])
def test_snr_under_the_refusal_line_when_the_vad_hears_speech_throughout(reader: str, kind: str, added: float):
    """Noise 0-5 dB under the voice reads under 10 dB (refused) even with no pause to measure it in."""
    x, segs = _readers()[reader]
    y = qs.mix_at_snr(x, _noise(kind, len(x)), added, R, segs)
    whole = np.array([[0.0, len(y) / R]])
    assert snr(y, whole).snr_db < 10.0
    assert snr(y, speech.detect(y, R).segments).snr_db < 10.0


@pytest.mark.parametrize("reader", ["librivox", "chan3", "allison"])
def test_clean_readers_read_over_the_warning_line(reader: str):
    x, segs = _readers()[reader]
    assert snr(x, segs).snr_db >= 20.0
    assert snr(x, np.array([[0.0, len(x) / R]])).snr_db >= 20.0


@pytest.mark.parametrize("reader", ["chan3", "allison"])
@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
def test_fifteen_db_is_not_refused(reader: str, kind: str):
    x, segs = _readers()[reader]
    y = qs.mix_at_snr(x, _noise(kind, len(x)), 15.0, R, segs)
    assert snr(y, speech.detect(y, R).segments).snr_db >= 10.0


def test_snr_parts_and_a_harmonic_voice_keeps_the_floor_estimate():
    x, segs = qs.reader_without_hum()
    est = snr(qs.mix_at_snr(x, qs.pink(len(x)), 30.0, R, segs), segs)
    assert est.method == "floor" and est.snr_db == est.floor_db
    assert est.snr_db == pytest.approx(30.0, abs=5.0)
    assert wada_snr(np.zeros(10)) == 60.0
    assert snr(np.zeros(100), np.zeros((0, 2))).snr_db == 0.0


def test_floor_bias_table_is_what_the_simulation_gives():
    from pipeline.measures.noise import FLOOR_BIAS, percentile_bias

    np.testing.assert_allclose(FLOOR_BIAS, percentile_bias(), atol=5e-6)
