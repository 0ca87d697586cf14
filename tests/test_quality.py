"""quality (the stage): its verdict, warnings and hints on real speech with a degradation added at known strength."""

from __future__ import annotations

import numpy as np
import pytest
import quality_signals as qs

from pipeline import registry
from pipeline.clip import Clip, SourceInfo, SpeechMap
from pipeline.errors import PipelineError

R = 16000



def clip_of(samples: np.ndarray, rate: int = R, speech: SpeechMap | None = None) -> Clip:
    samples = np.atleast_2d(samples)
    src = SourceInfo("x.wav", "wav", "pcm_s16le", 16, samples.shape[0], rate, samples.shape[1] / rate, 44 + samples.size * 2)
    return Clip(samples=samples, sample_rate=rate, source=src, speech=speech)


def test_stage_warns_narrowband_on_upsampled_phone_speech():
    al = qs.load("speech_allison_8k.flac", None)[: 8000 * 20]
    y = qs.narrowband(al, 8000, 44100)
    out = registry.build("quality", {})(clip_of(y, 44100))
    assert "narrowband" in [w.code for w in out.warnings]


def test_clean_reader_passes_with_metrics():
    x, segs = qs.reader()
    found = SpeechMap(segments=segs, runs=segs, duration_s=x.shape[-1] / R)
    out = registry.build("quality", {})(clip_of(x, speech=found).measured(speech_s=1.0))
    m = out.metrics
    assert m["speech_s"] == 1.0  # merged with what was there
    for key in ("snr_db", "snr_floor_db", "snr_wada_db", "clipped_ratio", "loudness_spread_lu", "dc_offset", "hum_hz",
                "hum_db", "bandwidth_hz", "music_share", "voice_distance", "voice_groups_s"):
        assert key in m
    assert not {"low_snr", "music_bed", "multiple_speakers", "unsteady_loudness", "clipping"} & {w.code for w in out.warnings}


def test_noisy_clip_is_refused_with_a_hint():
    x, segs = qs.reader()
    y = qs.mix_at_snr(x, qs.white(len(x)), 5.0, R, segs)
    with pytest.raises(PipelineError) as err:
        registry.build("quality", {})(clip_of(y))
    assert err.value.code == "InternalError"
    assert "SNR" in err.value.message and "aim for more than 20 dB" in err.value.message
    assert "microphone" in err.value.hint
    assert err.value.metrics["snr_db"] < 10


def test_moderate_noise_is_a_warning():
    x, segs = qs.reader()
    out = registry.build("quality", {})(clip_of(qs.mix_at_snr(x, qs.pink(len(x)), 15.0, R, segs)))
    w = {w.code: w for w in out.warnings}
    assert "low_snr" in w and w["low_snr"].hint


def test_loud_music_bed_is_refused_quiet_one_warned():
    x, segs = qs.reader()
    stage = registry.build("quality", {})
    with pytest.raises(PipelineError, match="music"):
        stage(clip_of(qs.mix_at_snr(x, qs.music(len(x)), 16.0, R, segs)))
    out = stage(clip_of(qs.mix_at_snr(x, qs.music(len(x)), 30.0, R, segs)))
    assert "music_bed" in {w.code for w in out.warnings}


def test_ramp_refused_clipping_warned():
    x, _ = qs.reader()
    stage = registry.build("quality", {})
    with pytest.raises(PipelineError, match="volume goes up and down"):
        stage(clip_of(qs.ramp(x, 24.0)))
    out = stage(clip_of(qs.clip_fraction(x, 0.01)))
    assert "clipping" in {w.code for w in out.warnings}


def test_hum_and_two_voices_warned():
    x, segs = qs.reader_without_hum()
    stage = registry.build("quality", {})
    out = stage(clip_of(qs.add_hum(x, R, 59.8, -30.0, segs)))
    hum = {w.code: w for w in out.warnings}["hum"]
    assert "59.8 Hz" in hum.message
    two = np.concatenate([qs.load("speech_arctic_awb_16k.wav"), qs.load("speech_arctic_slt_16k.wav")])
    w = {w.code: w for w in stage(clip_of(two)).warnings}
    assert "two voices" in w["multiple_speakers"].message


def test_hum_not_judged_under_five_seconds():
    x, segs = qs.reader_without_hum()
    short = qs.add_hum(x, R, 60.0, -20.0, segs)[: int(4.5 * R)]
    assert "hum" not in {w.code for w in registry.build("quality", {})(clip_of(short)).warnings}


def test_noise_the_vad_hears_as_speech_is_refused():
    """Babble 5 dB under the reader: the VAD hears speech in 98 % of the clip (51 % without the babble)."""
    x, segs = qs.reader_without_hum()
    y = qs.mix_at_snr(x, qs.babble(len(x)), 5.0, R, segs)
    with pytest.raises(PipelineError) as err:
        registry.build("quality", {})(clip_of(y))
    assert err.value.code == "InternalError" and err.value.metrics["snr_db"] < 10


def test_only_the_first_channel_is_judged():
    x, segs = qs.reader()
    noisy = qs.mix_at_snr(x, qs.white(len(x)), 0.0, R, segs)
    stage = registry.build("quality", {})
    stage(clip_of(np.vstack([x, noisy])))  # clean first channel: passes
    with pytest.raises(PipelineError):
        stage(clip_of(np.vstack([noisy, x])))


def test_options_are_checked():
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError):
        registry.build("quality", {"refuse_snr_db": 30.0})
    with pytest.raises(ConfigError):
        registry.build("quality", {"min_snr_dB": 30.0})
    with pytest.raises(ConfigError):
        registry.build("quality", {"max_voice_distance": 0.0})
