"""highpass: DC and rumble go, the voice stays."""

from __future__ import annotations

import numpy as np
from conftest import load

from pipeline.clip import Clip, SourceInfo
from stages.highpass import Highpass, highpass

X, SR = load("speech_librivox_16k.wav")


def _band_db(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return float(10 * np.log10(np.sum(spec[(f >= lo) & (f < hi)]) + 1e-20))


def test_dc_offset_and_rumble_removed_voice_kept():
    t = np.arange(X.shape[1]) / SR
    rumble = (0.1 * np.sin(2 * np.pi * 20 * t)).astype(np.float32)
    y = X + np.float32(0.3) + rumble
    out = highpass(y, SR, 60.0)
    assert abs(float(np.mean(out))) < 1e-4
    assert _band_db(out[0], 15, 25) < _band_db(y[0], 15, 25) - 20  # 20 Hz rumble down > 20 dB
    assert abs(_band_db(out[0], 300, 3000) - _band_db(X[0], 300, 3000)) < 0.2  # speech band untouched


def test_stage_reports_the_offset_it_removed():
    src = SourceInfo("t.wav", "wav", "pcm_s16le", 16, 1, SR, X.shape[1] / SR, 0)
    out = Highpass(cutoff_hz=0.0)(Clip(X + np.float32(0.2), SR, src))
    assert out.metrics["dc_offset_removed"] == round(float(np.mean(X + np.float32(0.2))), 6)
    np.testing.assert_allclose(out.samples, X - X.mean(), atol=1e-5)
