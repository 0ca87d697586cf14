"""repair: each fix applied only when measured, re-measured, and kept only when it helped."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import quality_signals as qs

from pipeline import registry, speech
from pipeline.clip import Clip, SourceInfo
from pipeline.errors import ConfigError
from pipeline.measures.noise import dc_offset
from pipeline.measures.spectrum import measure_hum, residual_lines
from stages import repair

R = 16000


def clip_of(samples: np.ndarray, rate: int = R) -> Clip:
    s = np.atleast_2d(samples)
    return Clip(samples=s, sample_rate=rate, source=SourceInfo("x.wav", "wav", "pcm_s16le", 16, s.shape[0], rate, s.shape[1] / rate, 100))


def allison() -> np.ndarray:
    """Phone speech: no DC, nothing under 300 Hz."""
    return qs.normalize_peak(qs.load("speech_allison_8k.flac")[: 20 * R])


def chan3() -> np.ndarray:
    """Read speech with no mains hum of its own."""
    return qs.normalize_peak(qs.load("speech_chan3_11k.wav"))


def by_name(out: Clip) -> dict[str, dict]:
    return {r["repair"]: r for r in out.metrics.get("repairs", [])}


def test_nothing_to_fix_leaves_the_clip_alone():
    c = clip_of(qs.normalize_peak(qs.load("speech_arctic_slt_16k.wav")))  # no DC, rumble or hum
    out = registry.build("repair", {})(c)
    assert out is c and "repairs" not in out.metrics


@pytest.mark.parametrize(("freq", "level"), [(50.0, -30.0), (60.0, -20.0), (59.8, -22.0), (55.1, -25.0)])
def test_hum_notched_at_its_measured_lines_and_gone(freq: float, level: float):
    """Off-nominal lines (59.8 Hz, 55.1 Hz: a 48 kHz take played at 44.1 kHz) and strong ones are
    removed: no line the input carried stands 10 dB out in the output."""
    x = chan3()
    segs = speech.detect(x, R).segments
    hummy = qs.add_hum(x, R, freq, level, segs, harmonics=10)
    lines = measure_hum(hummy, R).lines_hz
    out = registry.build("repair", {"highpass": False})(clip_of(np.vstack([hummy] * 2)))
    rec = by_name(out)["hum_notch"]
    assert rec["kept"] and rec["after"] < rec["before"] - 6 and 1 <= rec["passes"] <= 3
    left, _ = residual_lines(out.samples[0], R, lines)
    assert np.max(left) < 10.0
    assert measure_hum(out.samples[0], R).level_db() == -120.0
    assert out.samples.shape == (2, len(x))


def test_real_hum_of_a_real_reader_is_removed():
    """The LibriVox reader's own 60 Hz line (21 dB over its surroundings, 27 dB under the voice, measured)."""
    x = qs.normalize_peak(qs.load("speech_librivox_16k.wav"))
    h = measure_hum(x, R)
    assert h.peak_prominence_db > 15.0
    out = registry.build("repair", {"highpass": False})(clip_of(x))
    assert by_name(out)["hum_notch"]["kept"]
    left, _ = residual_lines(out.samples[0], R, h.lines_hz)
    assert np.max(left) < 10.0


def test_dc_removed_and_kept():
    out = registry.build("repair", {})(clip_of(allison() + 0.05))
    assert by_name(out)["dc"]["kept"]
    assert abs(dc_offset(out.samples[0])) < 1e-4


def test_rumble_high_passed_and_kept():
    from scipy.signal import butter, sosfilt

    x = allison()
    low = sosfilt(butter(4, 45, fs=R, output="sos"), qs.white(len(x), seed=3)).astype(np.float32)
    out = registry.build("repair", {})(clip_of(x + low * (0.3 * np.std(x) / np.std(low))))
    rec = by_name(out)["highpass"]
    assert rec["kept"] and rec["after"] < rec["before"] - 3


def test_a_fix_that_does_not_help_is_thrown_away(monkeypatch: pytest.MonkeyPatch):
    x = chan3()
    segs = speech.detect(x, R).segments
    hummy = qs.add_hum(x, R, 50.0, -30.0, segs)
    monkeypatch.setattr(repair, "notch_lines", lambda y, *a, **k: y)  # a "fix" that changes nothing
    c = clip_of(hummy)
    out = registry.build("repair", {"highpass": False})(c)
    rec = by_name(out)["hum_notch"]
    assert not rec["kept"]
    np.testing.assert_array_equal(out.samples, c.samples)


def test_a_fix_that_adds_noise_is_thrown_away(monkeypatch: pytest.MonkeyPatch):
    x = allison() + 0.05
    monkeypatch.setattr(repair, "remove_dc", lambda y, r: (y - y.mean() + 0.3 * qs.white(y.shape[-1])).astype(np.float32))
    out = registry.build("repair", {"highpass": False, "hum": False})(clip_of(x))
    assert not by_name(out)["dc"]["kept"]
    np.testing.assert_array_equal(out.samples[0], np.float32(x))


def test_denoiser_is_off_by_default_and_checked():
    assert registry.build("repair", {}).denoise is False
    if importlib.util.find_spec("noisereduce") is None:
        with pytest.raises(ConfigError):
            registry.build("repair", {"denoise": True})
        return
    x = allison()
    segs = speech.detect(x, R).segments
    noisy = qs.mix_at_snr(x, qs.white(len(x)), 10.0, R, segs)
    out = registry.build("repair", {"denoise": True})(clip_of(noisy))
    rec = by_name(out)["denoise"]
    assert rec["kept"] == (-rec["after"] >= -rec["before"] + 3.0)


def test_options_are_checked():
    with pytest.raises(ConfigError):
        registry.build("repair", {"highpass_hz": 500.0})
    with pytest.raises(ConfigError):
        registry.build("repair", {"hum_passes": 0})


def test_two_mains_sources_are_both_removed():
    """The LibriVox reader's own 60 Hz line plus an added 50 Hz comb: the second comb is found on
    re-measuring (it stands over 10 dB out) and notched too; nothing audible is left."""
    x = qs.normalize_peak(qs.load("speech_librivox_16k.wav")[: 20 * R])
    segs = speech.detect(x, R).segments
    hummy = qs.add_hum(x, R, 50.0, -30.0, segs, harmonics=10)
    out = registry.build("repair", {"highpass": False})(clip_of(hummy))
    assert by_name(out)["hum_notch"]["kept"]
    for f0 in (50.0, 60.0):
        left, _ = residual_lines(out.samples[0], R, np.array([f0]))
        assert left[0] < 10.0, f0
    h = measure_hum(out.samples[0], R)
    assert h.f0_hz is None or h.peak_prominence_db < 10.0 or h.level_db() <= -50.0
