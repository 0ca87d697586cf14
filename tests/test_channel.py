"""channel: the voice survives one-sided recordings and opposite-phase channels."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load

from pipeline.clip import Clip, SourceInfo
from stages.channel import Channel, choose

X, SR = load("speech_librivox_16k.wav")
V = X[0, : SR * 8]


def _clip(samples: np.ndarray) -> Clip:
    src = SourceInfo("t.wav", "wav", "pcm_s16le", 16, samples.shape[0], SR, samples.shape[1] / SR, 0)
    return Clip(samples, SR, src)


def _level(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2)))


def test_voice_only_in_right_channel_is_taken():
    quiet = np.random.default_rng(0).standard_normal(len(V)).astype(np.float32) * 1e-4
    out = Channel()(_clip(np.stack([quiet, V])))
    np.testing.assert_array_equal(out.samples[0], V)
    assert out.metrics["channel_policy"].startswith("channel 2")


def test_opposite_phase_is_recombined_not_cancelled():
    out = Channel()(_clip(np.stack([V, -V])))
    assert abs(_level(out.samples[0]) - _level(V)) < 0.1
    assert "opposite phase" in out.metrics["channel_policy"]
    # a blind average would have silenced it
    mixed = Channel(policy="mix")(_clip(np.stack([V, -V])))
    assert np.max(np.abs(mixed.samples)) == 0.0


def test_coherent_channels_are_averaged_and_mono_is_kept():
    out = Channel()(_clip(np.stack([V, 0.9 * V])))
    np.testing.assert_allclose(out.samples[0], 0.95 * V, atol=1e-6)
    assert Channel()(_clip(V[np.newaxis, :])).metrics["channel_policy"] == "mono"


def test_different_channels_keep_the_louder():
    other, _ = load("speech_arctic_awb_16k.wav")  # a different talker on the other track
    y = np.stack([np.resize(other[0], len(V)) * 0.5, V])
    mono, rec = choose(y, "auto", 10.0)
    np.testing.assert_array_equal(mono, V)
    assert "loudest" in str(rec["channel_policy"])


@pytest.mark.parametrize("policy", ["first", "mix", "loudest"])
def test_explicit_policies(policy: str):
    y = np.stack([0.1 * V, V])
    mono, _ = choose(y, policy)
    expected = {"first": 0.1 * V, "mix": 0.55 * V, "loudest": V}[policy]
    np.testing.assert_allclose(mono, expected, atol=1e-6)
