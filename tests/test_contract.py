"""One contract over every registered stage: builds from YAML by name, pickles, returns a new
float32 (channels, frames) Clip, and never mutates its input."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
from conftest import load

from pipeline import registry
from pipeline.clip import FACTS, Clip, SourceInfo
from pipeline.errors import ConfigError
from pipeline.pipeline import Pipeline
from pipeline.stage import Stage

STAGES = sorted(registry.available())


def _providers(fact: str) -> list[str]:
    return [name for name in STAGES if fact in registry.get(name).provides and not registry.get(name).needs]


def _with_needs(clip: Clip, needs: frozenset[str]) -> Clip:
    """``clip`` given the facts a stage needs, made by the first registered stage providing each."""
    for fact in sorted(needs):
        clip = registry.build(_providers(fact)[0])(clip)
    return clip


def _clip(stereo: bool = False) -> Clip:
    x, sr = load("speech_librivox_16k.wav")
    samples = np.vstack([x, 0.5 * x]) if stereo else x
    src = SourceInfo("speech.wav", "wav", "pcm_s16le", 16, samples.shape[0], sr, x.shape[1] / sr, 44 + samples.size * 2)
    return Clip(samples=samples, sample_rate=sr, source=src)


@pytest.fixture(scope="module")
def clips() -> dict[str, Clip]:
    return {"mono": _clip(), "stereo": _clip(stereo=True)}


def test_there_are_stages():
    assert {"channel", "highpass", "resample", "window", "loudness", "edges", "encode", "validate"} <= set(STAGES)


@pytest.mark.parametrize("name", STAGES)
def test_stage_contract(name: str, clips: dict[str, Clip]):
    cls = registry.get(name)
    stage = registry.build(name, {})
    assert isinstance(stage, Stage) and stage.name == name
    assert dataclasses.is_dataclass(stage) and type(stage).__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert isinstance(cls.changes_audio, bool)
    assert isinstance(cls.needs, frozenset) and isinstance(cls.provides, frozenset)
    assert cls.needs <= set(FACTS) and cls.provides <= set(FACTS)
    assert all(_providers(f) for f in cls.needs), f"{name} needs a fact no stage provides"
    assert registry.summary(cls), f"{name} needs a docstring"
    assert pickle.loads(pickle.dumps(stage)) == stage
    Pipeline((*(registry.build(_providers(f)[0]) for f in sorted(cls.needs)), stage))  # a valid order
    if cls.needs:
        with pytest.raises(ConfigError, match=name):
            Pipeline((stage,))  # alone, its needs are missing: refused when the chain is built
    if getattr(cls, "contract_needs_service", False):
        pytest.skip("talks to the enrollment service; covered by its own tests")
    for kind, plain in clips.items():
        if cls.needs:
            with pytest.raises(ValueError, match="needs"):
                stage(plain)
        clip = _with_needs(plain, cls.needs)
        before = clip.samples.copy()
        out = stage(clip)
        assert isinstance(out, Clip)
        assert out.samples.dtype == np.float32 and out.samples.ndim == 2
        assert out.samples.shape[0] >= 1 and out.samples.shape[1] > 0
        np.testing.assert_array_equal(clip.samples, before)  # input untouched
        assert not clip.samples.flags.writeable and not out.samples.flags.writeable
        if not cls.changes_audio:
            np.testing.assert_array_equal(out.samples, clip.samples)
        for fact in cls.provides:
            assert out.has(fact), f"{name} provides {fact} but did not set it"
        assert pickle.loads(pickle.dumps(out)).samples.shape == out.samples.shape, kind


def test_clip_is_immutable():
    clip = _clip()
    with pytest.raises(ValueError, match="read-only"):
        clip.samples[0, 0] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        clip.sample_rate = 8000  # type: ignore[misc]
    with pytest.raises(TypeError):
        clip.metrics["x"] = 1  # type: ignore[index]
    c2 = clip.measured(a=1).warn("hum", "50 Hz hum")
    assert "a" not in clip.metrics and clip.warnings == () and c2.metrics["a"] == 1 and c2.warnings[0].code == "hum"


@pytest.mark.parametrize("name", STAGES)
def test_every_number_option_declares_its_range(name: str):
    """A number no option bounds could switch a rule off or ask for absurd work (a 1e9 s fade):
    every int and float option says what a config may set, and the registry refuses the rest."""
    cls = registry.get(name)
    for opt in registry.options(cls):
        if opt.type in ("float", "int"):
            assert opt.range, f"{name}.{opt.name} declares no range"
            with pytest.raises(ConfigError, match=f"{opt.name}.*out of range|{opt.name}"):
                registry.build(name, {opt.name: 1e12 if opt.type == "float" else 10**12})
