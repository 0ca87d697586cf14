"""measures.voices: MFCCs, and the evidence of a second voice on real recordings of one and of two speakers."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
import quality_signals as qs
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import speech
from pipeline.measures.voices import MFCC_HOP_S, _two_means, mfcc, mfcc_slice, speaker_change

R = 16000



def test_two_speakers_flagged_one_reader_not():
    awb, slt = qs.load("speech_arctic_awb_16k.wav"), qs.load("speech_arctic_slt_16k.wav")
    two = np.concatenate([awb, slt])
    assert speaker_change(two, speech.detect(two, R).segments) > 0.1
    x, segs = qs.reader()
    assert speaker_change(x, segs) < 0.1


def _voice(name: str) -> np.ndarray:
    return qs.normalize_peak(qs.load(name))


def _turns(a: np.ndarray, b: np.ndarray, turn_s: float, each_s: float) -> np.ndarray:
    """Two voices taking turns of ``turn_s`` (A B A B ...), ``each_s`` of each."""
    k = int(turn_s * R)
    return np.concatenate([x[i : i + k] for i in range(0, int(each_s * R), k) for x in (a, b) if i < len(x)])


def _speaker_change(y: np.ndarray) -> float:
    return speaker_change(y, speech.detect(y, R).segments)


@pytest.mark.parametrize(
    ("a", "b", "turn_s", "each_s", "least"),
    [
        ("speech_arctic_awb_16k.wav", "speech_arctic_slt_16k.wav", 2.0, 4.0, 0.17),  # measured 0.25
        ("speech_librivox_16k.wav", "speech_allison_8k.flac", 2.0, 10.0, 0.14),  # 0.21
        ("speech_librivox_16k.wav", "speech_allison_8k.flac", 3.0, 12.0, 0.14),  # 0.20
        ("speech_allison_8k.flac", "speech_arctic_awb_16k.wav", 2.0, 4.0, 0.17),  # 0.28
    ],
)
def test_two_voices_taking_turns_flagged(a: str, b: str, turn_s: float, each_s: float, least: float):
    """A man and a woman taking turns: before the turn test these read -0.18, -0.02, 0.12 and
    0.11 (the change-point test alone misses or barely catches them). The floors leave room for
    the few hundredths the value moves with the speech segments."""
    assert _speaker_change(_turns(_voice(a), _voice(b), turn_s, each_s)) > least


def test_repeated_turns_of_whole_sentences_flagged():
    awb, slt = _voice("speech_arctic_awb_16k.wav"), _voice("speech_arctic_slt_16k.wav")
    assert _speaker_change(np.concatenate([awb, slt, awb, slt])) > 0.3  # measured 0.42 (was -0.05)


@pytest.mark.parametrize(
    "kind", ["librivox", "librivox+pink20", "librivox+babble20", "librivox ramp12", "chan3", "chan3+pink20",
             "allison", "allison+white20"],
)
def test_single_reader_not_flagged_even_with_noise_or_a_ramp(kind: str):
    """One voice, also with noise at 20 dB SNR or a 12 dB level ramp, stays well under the 0.1
    threshold (measured -0.02 to 0.02)."""
    if kind.startswith("librivox"):
        x, segs = qs.reader()
    elif kind.startswith("chan3"):
        x, segs = qs.reader_without_hum()
    else:
        x = _voice("speech_allison_8k.flac")[: 20 * R]
        segs = speech.detect(x, R).segments
    if kind.endswith("pink20"):
        x = qs.mix_at_snr(x, qs.pink(len(x)), 20.0, R, segs)
    elif kind.endswith("white20"):
        x = qs.mix_at_snr(x, qs.white(len(x)), 20.0, R, segs)
    elif kind.endswith("babble20"):
        x = qs.mix_at_snr(x, qs.babble(len(x)), 20.0, R, segs)
    elif kind.endswith("ramp12"):
        x = qs.ramp(x, 12.0)
    assert _speaker_change(x) < 0.06


def test_two_means_is_deterministic_and_ignores_a_lone_outlier():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((20, 12))
    w = np.ones(20)
    lab = _two_means(m, w)
    assert lab is not None and np.array_equal(lab, _two_means(m, w))
    m[3] += 50.0  # one odd chunk: not split off alone
    lab = _two_means(m, w)
    assert lab is None or min(lab.sum(), (~lab).sum()) >= 4
    two = np.concatenate([rng.standard_normal((10, 12)), rng.standard_normal((10, 12)) + 3.0])
    lab = _two_means(two, w)
    assert lab is not None and (np.array_equal(lab, np.arange(20) >= 10) or np.array_equal(lab, np.arange(20) < 10))


def test_mfcc_shape_and_gain_invariance():
    x, _ = qs.reader()
    c = mfcc(x)
    assert c.shape == ((len(x) - 400) // 160 + 1, 13)
    np.testing.assert_allclose(mfcc(0.25 * x)[:, 1:], c[:, 1:], atol=1e-3)


@settings(max_examples=25, deadline=None)
@given(first=st.integers(0, 800), start_s=st.floats(0.0, 14.0), length_s=st.floats(0.5, 6.0))
def test_mfccs_of_a_stretch_are_the_rows_of_the_whole(first: int, start_s: float, length_s: float):
    """The window stage computes MFCCs only over the stretch its candidates span: starting on a
    frame boundary, they must be exactly the rows of the whole signal's MFCCs."""
    x16 = _librivox16()[: 16000 * 22]
    whole = mfcc(x16)
    part = mfcc(x16[160 * first :])
    np.testing.assert_allclose(part, whole[first:], rtol=1e-5, atol=1e-5)
    start_s = max(start_s, first * MFCC_HOP_S)
    n = int(length_s * 16000)
    np.testing.assert_allclose(
        mfcc_slice(part, start_s, n, first), mfcc_slice(whole, start_s, n), rtol=1e-5, atol=1e-5
    )


@lru_cache(maxsize=1)
def _librivox16() -> np.ndarray:
    import soundfile as sf
    from conftest import FIXTURES

    x, sr = sf.read(FIXTURES / "speech_librivox_16k.wav", dtype="float32")
    assert sr == 16000
    return x
