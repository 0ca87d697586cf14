"""`voiceprep run` on real speech with degradations built here: measured properties of the outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from conftest import load, write_av

from pipeline import check, config, speech
from pipeline.cli import main
from pipeline.measures.loudness import integrated_lufs, true_peak_dbtp
from pipeline.runner import Job, plan, process_file, run_paths

TARGET_LUFS, CEILING = -20.0, -1.5


@pytest.fixture(scope="module")
def cfg() -> config.Config:
    return config.load()


@pytest.fixture(scope="module")
def voice() -> tuple[np.ndarray, int]:
    x, sr = load("speech_librivox_16k.wav")
    return x[0], sr


@pytest.fixture(scope="module")
def voice48(voice) -> np.ndarray:
    x, sr = voice
    return soxr.resample(x, sr, 48000).astype(np.float32)


def _noise(n: int, level_db: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 10 ** (level_db / 20)).astype(np.float32)


def _write(path: Path, x: np.ndarray, sr: int, subtype: str = "PCM_16") -> Path:
    sf.write(path, np.atleast_2d(x).T, sr, subtype=subtype)
    return path


def _assert_good_output(res, input_speech: list[tuple[float, float]] | None = None) -> dict:
    """The properties every produced clip must have, measured on the written file."""
    assert res.status == "ok", f"{res.input}: {res.code}: {res.message}"
    y, sr = sf.read(res.output, dtype="float32", always_2d=True)
    info = sf.info(res.output)
    assert info.subtype == "PCM_16" and info.channels == 1 and info.format == "WAV"
    dur = len(y) / sr
    assert 10.0 <= dur <= 20.0
    lufs = integrated_lufs(y[:, 0], sr)
    assert abs(lufs - TARGET_LUFS) <= 1.0, lufs
    assert true_peak_dbtp(y[:, 0]) <= CEILING + 0.1
    rep = speech.detect(y[:, 0], sr)
    assert rep.speech_s > 10.0 and rep.speech_s / dur >= 0.6
    assert rep.longest_pause_s <= 2.0
    lead, tail = rep.segments[0, 0], dur - rep.segments[-1, 1]
    assert 0.05 <= lead <= 0.45 and 0.05 <= tail <= 0.45, (lead, tail)
    assert check(res.output).ok  # the produced file passes the service's rules
    seg = res.segment
    assert seg is not None and 0 <= seg["start_s"] < seg["end_s"]
    if input_speech is not None:  # the window lies inside the speech of the input
        assert any(a - 0.35 <= seg["start_s"] and seg["end_s"] <= b + 0.35 for a, b in input_speech), seg
    m = res.metrics
    for key in ("duration_s", "speech_s", "longest_speech_s", "longest_pause_s", "loudness_lufs", "true_peak_dbtp", "sample_rate"):
        assert key in m, key
    assert m["duration_s"] == pytest.approx(dur, abs=0.01)
    return m


def _table(stdout: str) -> dict[str, str]:
    """The end-of-run summary table, ``name: value`` (codes and warnings by their own name)."""
    rows = {}
    for line in stdout.splitlines():
        name, _, value = line.strip().rpartition("  ")
        if name:
            rows[name.strip()] = value.strip()
    return rows


def _run(cfg, tmp_path: Path, src: Path):
    return process_file(Job(str(src), str(tmp_path / "out" / (src.stem + ".wav"))), cfg)


def test_clean_speech(cfg, tmp_path: Path, voice):
    x, sr = voice
    res = _run(cfg, tmp_path, _write(tmp_path / "a.wav", x, sr))
    m = _assert_good_output(res, [(0.0, 26.3)])
    assert m["sample_rate"] == 16000  # 16 kHz is kept, never upsampled


def test_long_leading_and_trailing_silence(cfg, tmp_path: Path, voice48):
    sr = 48000
    pad = _noise(sr * 12, -70)
    x = np.concatenate([pad, voice48, pad])
    res = _run(cfg, tmp_path, _write(tmp_path / "pad.wav", x, sr))
    m = _assert_good_output(res, [(12.0, 12.0 + len(voice48) / sr)])
    assert m["sample_rate"] == 24000


def test_five_minute_recording(cfg, tmp_path: Path, voice):
    x, sr = voice
    room, _ = load("noise_room_ami_16k.flac")
    parts, where = [], []
    t = 0.0
    for k in range(6):
        parts.append(room[0] * 0.5)
        t += room.shape[1] / sr
        where.append((t, t + len(x) / sr))
        parts.append(x * (0.5 + 0.1 * k))
        t += len(x) / sr
    y = np.concatenate(parts)[: sr * 300]
    assert len(y) == sr * 300
    res = _run(cfg, tmp_path, _write(tmp_path / "five.wav", y, sr))
    _assert_good_output(res, where)
    assert res.metrics["input_duration_s"] == pytest.approx(300.0, abs=0.01)


def test_long_input_final_pass_reuses_the_scouted_speech(cfg, tmp_path: Path, voice, monkeypatch):
    """A scouted long input is not run through speech detection again on its final pass: the
    window stage takes the segments found while scouting, and chooses the same window it would
    choose by detecting again."""
    from stages.window import Window

    x, sr = voice
    room, _ = load("noise_room_ami_16k.flac")
    y = np.concatenate([room[0] * 0.5, x * 0.6, room[0] * 0.5, x, room[0][: 4 * sr] * 0.5, x * 0.8])
    y = np.concatenate([y, y])[: sr * 150]
    path = _write(tmp_path / "long150.wav", y, sr)
    hinted: list[bool] = []
    real_speech = Window.speech

    def spy(self, clip, x16):
        hinted.append(clip.speech is not None)
        return real_speech(self, clip, x16)

    monkeypatch.setattr(Window, "speech", spy)
    with_hint = process_file(Job(str(path), str(tmp_path / "a.wav")), cfg)
    assert hinted[-1] and not any(hinted[:-1])  # scouting detects, the final pass reuses
    monkeypatch.setattr(Window, "speech", lambda self, clip, x16: real_speech(
        self, clip.replace(speech=None), x16))
    detected = process_file(Job(str(path), str(tmp_path / "b.wav")), cfg)
    _assert_good_output(with_hint)
    _assert_good_output(detected)
    assert with_hint.segment == pytest.approx(detected.segment, abs=0.05)
    assert with_hint.metrics["speech_s"] == pytest.approx(detected.metrics["speech_s"], abs=0.3)


@pytest.mark.parametrize("level_lufs", [-45.0, -12.0])
def test_quiet_and_hot_recordings(cfg, tmp_path: Path, voice48, level_lufs: float):
    sr = 48000
    now = integrated_lufs(voice48, sr)
    y = voice48 * np.float32(10 ** ((level_lufs - now) / 20))
    y = np.clip(y, -1.0, 1.0)  # the hot one clips a little, as real hot recordings do
    res = _run(cfg, tmp_path, _write(tmp_path / f"lvl{level_lufs}.wav", y, sr))
    m = _assert_good_output(res)
    assert m["gain_db"] == pytest.approx(TARGET_LUFS - level_lufs, abs=2.0)


def test_voice_in_right_channel_only(cfg, tmp_path: Path, voice48):
    y = np.stack([_noise(len(voice48), -75), voice48])
    assert not check(_write(tmp_path / "right_in.wav", y, 48000)).ok  # the service would hear silence
    res = _run(cfg, tmp_path, _write(tmp_path / "right.wav", y, 48000))
    _assert_good_output(res)


def test_opposite_phase_channels(cfg, tmp_path: Path, voice48):
    y = np.stack([voice48, -voice48])
    res = _run(cfg, tmp_path, _write(tmp_path / "phase.wav", y, 48000))
    _assert_good_output(res)
    assert res.metrics["loudness_lufs"] == pytest.approx(TARGET_LUFS, abs=1.0)


def test_dc_offset(cfg, tmp_path: Path, voice):
    x, sr = voice
    res = _run(cfg, tmp_path, _write(tmp_path / "dc.wav", x + np.float32(0.25), sr))
    _assert_good_output(res)
    y, _ = sf.read(res.output, dtype="float32")
    assert abs(float(np.mean(y))) < 1e-3


def test_three_second_pauses_between_phrases(cfg, tmp_path: Path, voice):
    x, sr = voice
    rep = speech.detect(x, sr)
    gap = np.zeros(3 * sr, np.float32)
    parts = []
    for a, b in rep.runs:
        parts += [x[int(max(a - 0.1, 0) * sr) : int((b + 0.1) * sr)], gap]
    res = _run(cfg, tmp_path, _write(tmp_path / "phrases.wav", np.concatenate(parts), sr))
    _assert_good_output(res)
    assert "pause_shortened" in [w["code"] for w in res.warnings]


FORMATS = [
    ("s24.wav", "sf", ("WAV", "PCM_24")),
    ("f32.wav", "sf", ("WAV", "FLOAT")),
    ("ulaw.wav", "sf", ("WAV", "ULAW")),
    ("a.flac", "sf", ("FLAC", "PCM_16")),
    ("a.ogg", "sf", ("OGG", "VORBIS")),
    ("a.aiff", "sf", ("AIFF", "PCM_16")),
    ("a.mp3", "av", ("mp3", "libmp3lame")),
    ("a.m4a", "av", ("mp4", "aac")),
    ("a.webm", "av", ("webm", "libopus")),
    ("a.opus", "av", ("ogg", "libopus")),
]


@pytest.mark.parametrize(("name", "how", "spec"), FORMATS, ids=[f[0] for f in FORMATS])
def test_every_supported_input_format(cfg, tmp_path: Path, voice48, name, how, spec):
    sr = 48000
    stereo = np.stack([voice48, voice48 * 0.8])
    p = tmp_path / name
    if how == "sf":
        sf.write(p, stereo.T, sr, format=spec[0], subtype=spec[1])
    else:
        write_av(p, stereo, sr, spec[0], spec[1])
    _assert_good_output(_run(cfg, tmp_path, p))


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("nonspeech_music_stereo_44k.flac", "Audio.AudioSilentError"),
        ("nonspeech_elephant_48k.flac", "Audio.AudioSilentError"),
        ("noise_room_ami_16k.flac", "Audio.AudioSilentError"),
        ("speech_arctic_awb_16k.wav", "Audio.AudioSilentError"),
        ("speech_allison_8k.flac", "Audio.AudioRateError"),
    ],
)
def test_what_cannot_be_fixed_is_refused(cfg, tmp_path: Path, name: str, code: str):
    src = Path(__file__).resolve().parent.parent / "fixtures" / name
    res = _run(cfg, tmp_path, src)
    assert res.status == "rejected" and res.code == code and res.hint and res.output is None
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_upsampling_when_allowed(tmp_path: Path):
    p = tmp_path / "c.yaml"
    text = config.default_config_path().read_text().replace("allow_upsample: false", "allow_upsample: true")
    p.write_text(text)
    src = Path(__file__).resolve().parent.parent / "fixtures" / "speech_allison_8k.flac"
    res = process_file(Job(str(src), str(tmp_path / "o.wav")), config.load(p))
    _assert_good_output(res)
    assert "narrowband" in [w["code"] for w in res.warnings]
    assert res.metrics["sample_rate"] == 24000


def test_undecodable_is_decoder_error(cfg, tmp_path: Path):
    p = tmp_path / "x.mp3"
    p.write_bytes(b"ID3\x03" + b"\x00" * 100)
    assert _run(cfg, tmp_path, p).code == "Audio.DecoderError"


def test_batch_mirrors_tree_reports_and_never_touches_inputs(tmp_path: Path, voice, capsys):
    x, sr = voice
    src = tmp_path / "in"
    (src / "day1").mkdir(parents=True)
    _write(src / "day1" / "take.wav", x, sr)
    write_av(src / "day1" / "take.m4a", x[np.newaxis, :], sr, "mp4", "aac")
    _write(src / "silence.wav", np.zeros(sr * 12, np.float32), sr)
    (src / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    out, report = tmp_path / "out", tmp_path / "rep" / "r.jsonl"
    code = main(["run", str(src), "--out", str(out), "--report", str(report), "--jobs", "2"])
    assert code == 1
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before
    produced = sorted(str(p.relative_to(out)) for p in out.rglob("*.wav"))
    assert produced == ["day1/take.m4a.wav", "day1/take.wav"]
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert len(lines) == 4
    keys = {"input", "status", "output", "code", "message", "hint", "warnings", "segment", "metrics"}
    assert all(keys <= set(d) for d in lines)
    by = {Path(d["input"]).name: d for d in lines}
    assert by["silence.wav"]["code"] == "Audio.AudioSilentError" and by["silence.wav"]["output"] is None
    assert by["broken.wav"]["code"] == "Audio.DecoderError"
    assert by["take.wav"]["status"] == "ok" and by["take.wav"]["segment"]["end_s"] > by["take.wav"]["segment"]["start_s"]
    table = _table(capsys.readouterr().out)
    assert table["ok"] == "2" and table["refused"] == "2" and table["Audio.DecoderError"] == "1"


def test_plan_names_collisions_and_single_files(tmp_path: Path):
    (tmp_path / "a.mp3").write_bytes(b"x")
    (tmp_path / "a.m4a").write_bytes(b"x")
    (tmp_path / "b.flac").write_bytes(b"x")
    jobs = list(plan([str(tmp_path)], "/o"))
    assert sorted(Path(j.output).name for j in jobs) == ["a.m4a.wav", "a.mp3.wav", "b.wav"]
    assert next(plan([str(tmp_path / "b.flac")], "/o")).output == "/o/b.wav"


def test_a_crash_in_one_file_keeps_the_others(tmp_path: Path, voice, monkeypatch):
    x, sr = voice
    good = _write(tmp_path / "good.wav", x, sr)
    bad = _write(tmp_path / "bad.wav", x[: sr * 2], sr)
    import pipeline.runner as runner

    real = runner.decode

    def flaky(info, **kw):
        if "bad" in info.path:
            raise RuntimeError("simulated bug")
        return real(info, **kw)

    monkeypatch.setattr(runner, "decode", flaky)
    results = run_paths([str(bad), str(good)], tmp_path / "o", config.load(), jobs=1)
    assert [r.status for r in results] == ["rejected", "ok"]
    assert results[0].code == "voiceprep.UnexpectedError" and "simulated bug" in results[0].message


def test_console_run_leaves_complete_outputs_and_report(tmp_path: Path, voice):
    """Through the installed entry point (`python -m pipeline run`), which leaves by a fast exit
    once its output is flushed: every output and every report line must already be on disk."""
    import subprocess
    import sys

    x, sr = voice
    src = tmp_path / "in"
    src.mkdir()
    _write(src / "take.wav", x, sr)
    _write(src / "silence.wav", np.zeros(sr * 12, np.float32), sr)
    out, report = tmp_path / "out", tmp_path / "r.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", str(src), "--out", str(out), "--report", str(report), "--jobs", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    table = _table(proc.stdout)
    assert table["ok"] == "1" and table["refused"] == "1"
    rows = {Path(r["input"]).name: r for r in map(json.loads, report.read_text().splitlines())}
    assert rows["silence.wav"]["code"] == "Audio.AudioSilentError"
    y, rate = sf.read(rows["take.wav"]["output"], dtype="float32")
    assert rate == rows["take.wav"]["metrics"]["sample_rate"] and 10 <= len(y) / rate <= 20
    assert abs(integrated_lufs(y, rate) - rows["take.wav"]["metrics"]["loudness_lufs"]) < 0.05
    assert not list(out.rglob("*.part"))
