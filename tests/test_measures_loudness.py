"""measures.loudness: the K-weighting against BS.1770's coefficient tables and pyloudnorm's matching filters,
integrated loudness against pyloudnorm, short-term loudness against time-domain K-weighting and the integrated
loudness, and the spread of short-term loudness, on real recordings."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest
import quality_signals as qs
import soxr
from conftest import FIXTURES, load
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.measures.loudness import integrated_lufs, k_weighting, loudness_spread, short_term_loudness

R = 16000

# ITU-R BS.1770-4, Table 1 (the shelf) and Table 2 (the high-pass), at 48 kHz: b0 b1 b2 a0 a1 a2
BS1770_48K = np.array([
    [1.53512485958697, -2.69169618940638, 1.19839281085285, 1.0, -1.69065929318241, 0.73248077421585],
    [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621],
])


def test_k_weighting_at_48k_is_the_standards_table():
    """The table's 14 decimals, to their rounding."""
    np.testing.assert_allclose(k_weighting(48000), BS1770_48K, rtol=0, atol=1e-14)


@pytest.mark.parametrize("rate", [8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 50000, 96000])
def test_k_weighting_at_any_rate_is_pyloudnorms_filter_from_the_same_prototype(rate: int):
    """pyloudnorm's "DeMan" filter class derives the same analog filters at each rate (its
    parameters carry fewer digits, hence 1e-11)."""
    meter = pyloudnorm.Meter(rate, filter_class="DeMan")
    ref = np.array([np.concatenate([f.b, f.a]) for f in meter._filters.values()])
    np.testing.assert_allclose(k_weighting(rate), ref, rtol=0, atol=1e-11)


@pytest.mark.parametrize(
    ("name", "rate"),
    [
        ("speech_librivox_16k.wav", None),
        ("speech_north_wind_44k.wav", None),
        ("meeting_ami_trn05_16k.flac", None),
        ("speech_chan3_11k.wav", None),
        ("speech_librivox_16k.wav", 22050),
    ],
)
def test_short_term_loudness_matches_time_domain_k_filter(name: str, rate: int | None):
    """The block-spectrum short-term loudness agrees with BS.1770 K-filtering in the time domain
    (pyloudnorm's filters from the same prototype, applied with scipy) on real recordings, window
    by window, to 0.2 LU; at 11 025 and 22 050 Hz too, where 1 s and 0.25 s in whole samples have
    no common block and the window is four whole hops."""
    import soundfile as sf
    from scipy.signal import lfilter

    x, sr = sf.read(qs.FIXTURES / name, dtype="float64", always_2d=True)
    x = x[:, 0]
    if rate is not None:
        x, sr = soxr.resample(x, sr, rate), rate
    meter = pyloudnorm.Meter(sr, filter_class="DeMan")
    y = x
    for f in meter._filters.values():
        y = lfilter(f.b, f.a, y)
    got, hop_s = short_term_loudness(x, sr)
    hop = int(round(hop_s * sr))
    assert hop_s == pytest.approx(0.25, abs=1 / sr)
    win = 4 * hop
    c = np.concatenate(([0.0], np.cumsum(y * y)))
    starts = np.arange(0, len(y) - win + 1, hop)
    ref = -0.691 + 10 * np.log10(np.maximum((c[starts + win] - c[starts]) / win, 1e-20))
    assert len(got) == len(ref)
    loud = ref > -60
    assert loud.sum() >= 2
    assert np.abs(got[loud] - ref[loud]).max() < 0.2


def test_level_ramp_widens_loudness_spread():
    x, segs = qs.reader()
    clean = loudness_spread(x, R, segs)
    ramp12 = loudness_spread(qs.ramp(x, 12.0), R, segs)
    ramp24 = loudness_spread(qs.ramp(x, 24.0), R, segs)
    assert clean[0] < 12.0
    assert ramp12[0] > clean[0] + 3.0
    assert ramp24[0] > 18.0
    assert ramp24[1] > 6.0  # the trend rises, in LU per 10 s


@settings(max_examples=10, deadline=None)
@given(gain_db=st.floats(-30.0, 0.0))
def test_spread_does_not_depend_on_gain(gain_db: float):
    x, segs = qs.reader()
    y = qs.mix_at_snr(x, qs.pink(len(x)), 15.0, R, segs)
    g = 10 ** (gain_db / 20)
    assert loudness_spread(g * y, R, segs)[0] == pytest.approx(loudness_spread(y, R, segs)[0], abs=0.05)


def _pyloudnorm(x: np.ndarray, rate: int) -> float:
    try:
        return float(pyloudnorm.Meter(rate, filter_class="DeMan").integrated_loudness(x))
    except ValueError:  # shorter than one block
        return float("-inf")


@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in FIXTURES.iterdir() if p.suffix in (".wav", ".flac")),
)
def test_integrated_loudness_is_pyloudnorms(name: str):
    """Every fixture (speech, music, noise, silence-heavy), at its rate and at 24 kHz, loud and
    quiet (blocks crossing the -70 LUFS absolute gate): the same LUFS to 1e-6 LU."""
    x, rate = load(name)
    x0 = x[0].astype(np.float64)
    for r, y in ((rate, x0), (24000, soxr.resample(x0, rate, 24000))):
        for gain_db in (0.0, -45.0, -75.0):
            z = y * 10 ** (gain_db / 20)
            ours, ref = integrated_lufs(z, r), _pyloudnorm(z, r)
            if np.isfinite(ref):
                assert abs(ours - ref) < 1e-6, (r, gain_db, ours, ref)
            else:
                assert ours == ref


def test_integrated_loudness_of_short_and_silent_input():
    assert integrated_lufs(np.zeros(24000), 24000) == float("-inf")
    assert integrated_lufs(np.ones(100) * 0.1, 24000) == float("-inf")  # shorter than a 400 ms block
    tone = 0.1 * np.sin(2 * np.pi * 1000 * np.arange(24000) / 24000)
    assert abs(integrated_lufs(tone, 24000) - _pyloudnorm(tone, 24000)) < 1e-6


@pytest.mark.parametrize("rate", [16000, 44100, 48000, 50000])
def test_short_term_loudness_of_a_steady_vowel_is_its_integrated_loudness(rate: int):
    """On a sustained vowel (3.0-6.5 s of the fixture, its 1 s loudness within 1.7 LU) the 1 s short-term
    loudness, power-averaged, is the gated integrated loudness to 0.1 LU at any rate: both read
    one K-weighting. Two different filters would show here: the cookbook shelf with BS.1770's own
    parameters, for one, reads 0.28 LU low on this vowel."""
    x = qs.load("vowel_sustained_50k.wav", rate).astype(np.float64)
    y = x[int(3.0 * rate) : int(6.5 * rate)]
    lk, _ = short_term_loudness(y, rate)
    power_mean = -0.691 + 10 * np.log10(np.mean(10 ** ((lk + 0.691) / 10)))
    assert len(lk) >= 8
    assert abs(power_mean - integrated_lufs(y, rate)) < 0.1
