"""loudness: on target within 1 LU, true peak under the ceiling, silence never amplified."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load

from pipeline.clip import Clip, SourceInfo, SpeechMap
from pipeline.measures.loudness import integrated_lufs, true_peak_dbtp
from stages.loudness import Loudness, limit

X, SR = load("speech_librivox_16k.wav")


def _clip(x: np.ndarray, speech: SpeechMap | None = None) -> Clip:
    return Clip(x, SR, SourceInfo("t.wav", "wav", "pcm_s16le", 16, 1, SR, x.shape[1] / SR, 0), speech=speech)


@pytest.mark.parametrize("start_lufs", [-45.0, -30.0, -20.0, -10.0])
def test_reaches_target_under_the_ceiling(start_lufs: float):
    now = integrated_lufs(X[0], SR)
    y = np.clip(X * np.float32(10 ** ((start_lufs - now) / 20)), -1, 1)
    out = Loudness()(_clip(y))
    assert abs(integrated_lufs(out.samples[0], SR) - (-20.0)) <= 1.0
    assert true_peak_dbtp(out.samples[0]) <= -1.5 + 0.01
    assert out.metrics["loudness_lufs"] == pytest.approx(integrated_lufs(out.samples[0], SR), abs=0.01)


def test_clip_without_speech_is_not_amplified():
    noise = (np.random.default_rng(0).standard_normal((1, SR * 5)) * 1e-3).astype(np.float32)
    out = Loudness()(_clip(noise, SpeechMap(segments=np.zeros((0, 2)), runs=np.zeros((0, 2)), duration_s=noise.shape[1] / SR)))
    np.testing.assert_array_equal(out.samples, noise)
    assert out.metrics["gain_db"] == 0.0


def test_limiter_only_touches_peaks():
    y = X[0] * np.float32(4.0)  # peaks far over full scale
    lim = limit(y, SR, -1.5)
    assert true_peak_dbtp(lim) <= -1.5 + 0.01
    quiet = (np.abs(y) > 1e-3) & (np.abs(y) < 0.05)  # most samples are far from any peak: nearly unchanged
    assert np.median(np.abs(lim[quiet] - y[quiet]) / np.abs(y[quiet])) < 0.01


def test_max_gain_is_respected():
    y = X * np.float32(10 ** (-35 / 20))
    out = Loudness(max_gain_db=10.0)(_clip(y))
    assert out.metrics["gain_db"] == pytest.approx(10.0, abs=0.01)


@pytest.mark.parametrize("start_lufs", [-45.0, -20.0, -8.0])
@pytest.mark.parametrize("crest", [1.0, 6.0])
def test_reported_loudness_and_true_peak_are_the_outputs(start_lufs: float, crest: float):
    """The stage measures the input's peaks once and scales them; what it reports must still be
    exactly what the produced audio measures, on target or not, limited or not."""
    from stages.loudness import normalize

    x = X[0].copy()
    x[:: SR // 3] *= np.float32(crest)  # isolated spikes: a loudness-neutral excess of peaks
    now = integrated_lufs(x, SR)
    x = np.clip(x * np.float32(10 ** ((start_lufs - now) / 20)), -1, 1)
    y, gain, lufs, tp = normalize(x, SR, -20.0, -1.5, 35.0)
    assert lufs == pytest.approx(integrated_lufs(y, SR), abs=0.01)
    assert tp == pytest.approx(true_peak_dbtp(y), abs=0.01)
    assert tp <= -1.5 + 1e-6 and abs(lufs + 20.0) < 0.5
    assert gain == pytest.approx(20 * np.log10(np.sqrt(np.mean(y.astype(np.float64) ** 2) / np.mean(x.astype(np.float64) ** 2))), abs=1.0)
