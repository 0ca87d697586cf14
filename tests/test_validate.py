"""validate / check: the service's codes on files exactly as they would be uploaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from conftest import load, write_av

from pipeline import check
from pipeline.registry import build


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, int]:
    return load("speech_librivox_16k.wav")


def _wav(path: Path, x: np.ndarray, sr: int, subtype: str = "PCM_16") -> Path:
    sf.write(path, np.atleast_2d(x).T, sr, subtype=subtype)
    return path


def test_clean_speech_passes_with_metrics(tmp_path: Path, speech):
    x, sr = speech
    v = check(_wav(tmp_path / "a.wav", x, sr))
    assert v.ok and v.code is None
    m = v.metrics
    assert m["container"] == "wav" and m["bit_depth"] == 16 and m["sample_rate"] == 16000
    assert m["duration_s"] == pytest.approx(26.23, abs=0.01)
    assert 20 < m["speech_s"] < 24.5 and m["longest_speech_s"] > 5


@pytest.mark.parametrize("subtype", ["PCM_24", "FLOAT", "PCM_U8"])
def test_non_16bit_wav_is_unsupported(tmp_path: Path, speech, subtype):
    x, sr = speech
    v = check(_wav(tmp_path / "a.wav", x, sr, subtype))
    assert v.code == "BadRequest.UnsupportedFileFormat"
    assert "voiceprep run" in v.hint


@pytest.mark.parametrize(("name", "fmt", "sub"), [("a.flac", "FLAC", "PCM_16"), ("a.ogg", "OGG", "VORBIS")])
def test_flac_and_ogg_are_unsupported(tmp_path: Path, speech, name, fmt, sub):
    x, sr = speech
    p = tmp_path / name
    sf.write(p, x[0], sr, format=fmt, subtype=sub)
    assert check(p).code == "BadRequest.UnsupportedFileFormat"


@pytest.mark.parametrize(("name", "fmt", "enc"), [("a.mp3", "mp3", "libmp3lame"), ("a.m4a", "mp4", "aac")])
def test_mp3_and_m4a_are_accepted(tmp_path: Path, speech, name, fmt, enc):
    x, sr = speech
    v = check(write_av(tmp_path / name, x, sr, fmt, enc))
    assert v.ok, v.line()


def test_over_10_mb_is_file_size_exceed(tmp_path: Path, speech):
    x, sr = speech
    y = soxr.resample(x[0], sr, 48000)
    stereo = np.stack([y, y])
    p = _wav(tmp_path / "big.wav", np.concatenate([stereo, stereo, stereo], axis=1), 48000)
    assert p.stat().st_size > 10_000_000
    v = check(p)
    assert v.code == "Audio.FileSizeExceed"
    assert "InternalError" in v.metrics["failures"]  # 79 s is also too long


def test_under_16k_is_rate_error(tmp_path: Path, speech):
    x, sr = speech
    v = check(_wav(tmp_path / "n.wav", soxr.resample(x[0], sr, 8000), 8000))
    assert v.code == "Audio.AudioRateError"
    assert v.metrics["sample_rate"] == 8000


def test_silence_is_silent_error(tmp_path: Path):
    v = check(_wav(tmp_path / "s.wav", np.zeros(16000 * 15, np.float32), 16000))
    assert v.code == "Audio.AudioSilentError"
    assert v.metrics["speech_s"] == 0.0


def test_music_is_silent_error():
    v = check(Path(__file__).parent.parent / "fixtures" / "nonspeech_music_stereo_44k.flac")
    assert v.code == "BadRequest.UnsupportedFileFormat"  # FLAC first...
    assert "Audio.AudioSilentError" in v.metrics["failures"]  # ...and no speech either


def test_only_the_first_channel_counts(tmp_path: Path, speech):
    x, sr = speech
    voice_right = np.stack([np.zeros_like(x[0]), x[0]])
    v = check(_wav(tmp_path / "r.wav", voice_right, sr))
    assert v.code == "Audio.AudioSilentError"
    voice_left = np.stack([x[0], np.zeros_like(x[0])])
    assert check(_wav(tmp_path / "l.wav", voice_left, sr)).ok


def test_a_voice_on_another_channel_is_named_in_the_hint(tmp_path: Path, speech):
    """A reader on the right channel only, the meeting room's noise on the left (both real, 44.1 kHz
    stereo MP3): the service hears no voice, and the hint says where it is and what to run; `run`
    then takes the voiced channel and its output passes."""
    from pipeline.config import load as load_config
    from pipeline.runner import Job, process_file

    x, sr = speech
    room, _ = load("noise_room_ami_16k.flac")
    left = np.resize(room[0], x.shape[1]) * np.float32(0.3)
    stereo = soxr.resample(np.stack([left, x[0]]).T, sr, 44100).T
    path = write_av(tmp_path / "right.mp3", stereo, 44100, "mp3", "mp3")
    v = check(path)
    assert v.code == "Audio.AudioSilentError"
    assert "channel 2" in v.hint and "`voiceprep run`" in v.hint
    first, second = v.metrics["channel_speech_s"]
    assert first <= 10.0 < second
    assert process_file(Job(str(path), str(tmp_path / "out.wav")), load_config()).status == "ok"
    assert check(tmp_path / "out.wav").ok


def test_no_voice_on_any_channel_keeps_the_plain_hint(tmp_path: Path):
    """Music on both channels: no channel holds the voice, so the hint stays the service's."""
    x, sr = load("nonspeech_music_stereo_44k.flac")
    v = check(_wav(tmp_path / "music.wav", x, sr))
    assert v.code == "Audio.AudioSilentError"
    assert "channel" not in v.hint and "read a passage aloud" in v.hint
    assert len(v.metrics["channel_speech_s"]) == 2 and max(v.metrics["channel_speech_s"]) <= 10.0


def test_no_long_run_is_short_error(tmp_path: Path, speech):
    x, sr = speech
    # phrases of 2.5 s separated by 1.2 s of silence: plenty of speech, no run over 5 s
    parts = []
    for k in range(8):
        parts += [x[0, int((k * 2.5 + 0.2) * sr) : int((k * 2.5 + 2.7) * sr)], np.zeros(int(1.2 * sr), np.float32)]
    v = check(_wav(tmp_path / "p.wav", np.concatenate(parts), sr))
    assert v.code == "Audio.AudioShortError", v.line()
    assert v.metrics["speech_s"] > 10 and v.metrics["longest_speech_s"] <= 5


def test_over_60_s_is_internal_error(tmp_path: Path, speech):
    x, sr = speech
    v = check(_wav(tmp_path / "long.wav", np.concatenate([x[0]] * 3), sr))
    assert v.code == "InternalError"
    assert v.metrics["duration_s"] > 60


def test_verdict_line_and_dict(tmp_path: Path):
    p = _wav(tmp_path / "s.wav", np.zeros(16000 * 2, np.float32), 16000)
    v = check(p)
    line = v.line()
    assert line.startswith(f"{p}: Audio.AudioSilentError: ") and line.endswith(")") and "\n" not in line
    d = v.as_dict()
    assert d["code"] == "Audio.AudioSilentError" and d["ok"] is False and "speech_s" in d["metrics"]


def test_validate_options_are_checked():
    with pytest.raises(Exception, match="min_run_s"):
        build("validate", {"min_run_s": 20.0})


def test_long_input_is_judged_in_blocks_with_the_same_measures(tmp_path: Path, speech, monkeypatch):
    """Over STREAM_CHECK_S the first channel is streamed through detection in blocks (60 s
    each): the verdict and every speech measure match decoding the whole file at once."""
    import pipeline.api as api

    x, sr = speech
    room, _ = load("noise_room_ami_16k.flac")
    parts = [x[0], room[0][: 3 * sr] * 0.5, 0.6 * x[0], room[0][: 2 * sr] * 0.5, x[0], x[0][: 20 * sr]]
    y = soxr.resample(np.concatenate(parts).astype(np.float32), sr, 22050)  # under 10 MB as stereo
    path = _wav(tmp_path / "long22.wav", np.stack([y, np.zeros_like(y)]), 22050)  # voice on channel 1 only
    whole = check(path)
    monkeypatch.setattr(api, "STREAM_CHECK_S", 30.0)
    streamed = check(path)
    assert whole.metrics["duration_s"] > 90  # two 60 s detection blocks, the seam inside speech
    assert streamed.code == whole.code == "InternalError"
    for key in ("duration_s", "speech_s", "longest_speech_s", "longest_pause_s", "speech_segments", "peak_dbfs"):
        assert streamed.metrics[key] == pytest.approx(whole.metrics[key], abs=0.05), key
    assert whole.metrics["speech_s"] > 60


def test_long_truncated_input_is_a_decoder_error_when_streamed(tmp_path: Path, speech, monkeypatch):
    import pipeline.api as api

    x, sr = speech
    path = _wav(tmp_path / "cut.wav", np.concatenate([x[0]] * 4), sr)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # the header still declares the full length
    monkeypatch.setattr(api, "STREAM_CHECK_S", 30.0)
    v = check(path)
    assert v.code == "Audio.DecoderError", v.line()
    assert "truncated" in v.message
