"""resample: down to the target, never up unless allowed, and sources under 16 kHz refused."""

from __future__ import annotations

import numpy as np
import pytest
import soxr
from conftest import load

from pipeline.clip import Clip, SourceInfo
from pipeline.errors import PipelineError
from stages.resample import Resample

X, SR = load("speech_librivox_16k.wav")


def _clip(x: np.ndarray, rate: int) -> Clip:
    return Clip(x, rate, SourceInfo("t.wav", "wav", "pcm_s16le", 16, 1, rate, x.shape[1] / rate, 0))


def test_48k_goes_down_to_24k_with_the_same_duration():
    y = soxr.resample(X[0], SR, 48000)[np.newaxis, :].astype(np.float32)
    out = Resample()(_clip(y, 48000))
    assert out.sample_rate == 24000
    assert out.duration_s == pytest.approx(y.shape[1] / 48000, abs=1e-3)


@pytest.mark.parametrize("rate", [16000, 22050, 24000])
def test_rates_from_16k_to_target_are_kept(rate: int):
    y = soxr.resample(X[0], SR, rate)[np.newaxis, :].astype(np.float32)
    out = Resample()(_clip(y, rate))
    assert out.sample_rate == rate and out.samples is not None
    np.testing.assert_array_equal(out.samples, y)


def test_under_16k_is_refused_or_upsampled_with_a_warning():
    x8, sr8 = load("speech_allison_8k.flac")
    with pytest.raises(PipelineError) as err:
        Resample()(_clip(x8, sr8))
    assert err.value.code == "Audio.AudioRateError" and "allow_upsample" in err.value.hint
    out = Resample(allow_upsample=True)(_clip(x8, sr8))
    assert out.sample_rate == 24000 and [w.code for w in out.warnings] == ["narrowband"]
    assert out.duration_s == pytest.approx(x8.shape[1] / sr8, abs=1e-3)


def test_target_is_validated():
    with pytest.raises(ValueError, match="target_hz"):
        Resample(target_hz=8000)
