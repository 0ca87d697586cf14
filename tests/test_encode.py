"""encode: 16-bit grid, TPDF dither that is deterministic, facts of the WAV to be written."""

from __future__ import annotations

import numpy as np
from conftest import load

from pipeline.clip import Clip, SourceInfo
from stages.encode import Encode, quantize16

X, SR = load("speech_librivox_16k.wav")


def test_output_describes_a_16bit_wav():
    src = SourceInfo("t.flac", "flac", "flac", 24, 1, SR, X.shape[1] / SR, 123)
    out = Encode()(Clip(X, SR, src))
    s = out.source
    assert (s.container, s.codec, s.bit_depth, s.channels) == ("wav", "pcm_s16le", 16, 1)
    assert s.size_bytes == 44 + 2 * X.shape[1]
    assert np.all(out.samples * 32768 == np.round(out.samples * 32768))


def test_dither_is_tpdf_and_deterministic():
    quiet = np.full((1, 200_000), 0.25 / 32768, np.float32)  # a quarter of one step
    a, b = quantize16(quiet), quantize16(quiet)
    np.testing.assert_array_equal(a, b)
    steps = np.round(a * 32768).astype(int)
    assert set(np.unique(steps)) <= {-1, 0, 1, 2}
    assert abs(float(steps.mean()) - 0.25) < 0.01  # dither keeps the mean: no truncation bias
    plain = quantize16(quiet, dither=False)
    assert np.all(plain == 0.0)
