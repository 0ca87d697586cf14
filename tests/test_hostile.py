"""Hostile inputs (issue 16): every file gets a verdict with a service code, whatever its bytes,
name or file type, and nothing is decoded past what the file can hold."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fuzzing import Seed, bad_headers, seeds, variants

from pipeline import audio_io, config, limits
from pipeline.api import check
from pipeline.cli import main
from pipeline.errors import SERVICE_CODES, PipelineError
from pipeline.plan import find
from pipeline.runner import Job, process_file

FIX = Path(__file__).resolve().parent.parent / "fixtures"
DEC = "Audio.DecoderError"


@pytest.fixture(scope="module")
def fuzz_seeds(tmp_path_factory: pytest.TempPathFactory) -> list[Seed]:
    return seeds(tmp_path_factory.mktemp("seeds"))


@pytest.fixture(scope="module")
def headers(fuzz_seeds: list[Seed], tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, str | None]]:
    return {name: (data, code) for name, data, code in bad_headers(fuzz_seeds, tmp_path_factory.mktemp("hdr"))}


@pytest.fixture(scope="module")
def check_cfg() -> config.Config:
    return config.load(chains=("check",))


@pytest.fixture(scope="module")
def run_cfg() -> config.Config:
    return config.load()


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to decode samples fails the test: a refusal must come from the header."""

    def refuse(*_a: object, **_k: object) -> Iterator[np.ndarray]:
        raise AssertionError("decoded a file that should have been refused from its header")

    for name in ("_blocks_soundfile", "_blocks_av"):
        monkeypatch.setattr(audio_io, name, refuse)


def _plain(message: str) -> None:
    """A message a person can read: no FFmpeg error numbers, no Python internals."""
    for leak in ("Errno", "NoneType", "avcodec_", "Traceback", "object has no attribute"):
        assert leak not in message, message


# ---- streams PyAV cannot identify ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bits0.wav", "tag_ffff.wav", "tag0.wav", "m4a_dinf_size1.m4a", "m4a_stsd_size1.m4a"])
def test_unidentified_streams_are_decoder_errors(tmp_path, headers, check_cfg, run_cfg, name):
    """These crashed `_probe_av` with AttributeError ('NoneType' has no 'sample_rate')."""
    p = tmp_path / name
    p.write_bytes(headers[name][0])
    v = check(p, check_cfg)
    assert v.code == DEC
    _plain(v.message)
    r = process_file(Job(str(p), str(tmp_path / "out.wav")), run_cfg)
    assert (r.code, r.message) == (DEC, v.message)
    assert not (tmp_path / "out.wav").exists()


def test_ffmpeg_error_numbers_become_words(tmp_path, check_cfg):
    p = tmp_path / "random.m4a"
    p.write_bytes(np.random.default_rng(7).integers(0, 256, 300_000, dtype=np.uint8).tobytes())
    v = check(p, check_cfg)
    assert v.code == DEC and v.message == "not a readable audio file (the data is damaged or not audio)"
    assert str(tmp_path) not in v.message


# ---- headers refused before decoding ---------------------------------------------------------------


def test_one_hertz_header_is_refused_before_decoding(tmp_path, headers, check_cfg, run_cfg, no_decoding):
    """512 KB 'at 1 Hz' took 265 s in `check` and over 900 s in `run`: now nothing is decoded."""
    p = tmp_path / "rate1.wav"
    p.write_bytes(headers["rate1.wav"][0])
    assert p.stat().st_size > 500_000
    v = check(p, check_cfg)
    assert v.code == "Audio.AudioRateError" and "1 Hz" in v.message
    r = process_file(Job(str(p), str(tmp_path / "o.wav")), run_cfg)
    assert r.code == "Audio.AudioRateError"


@pytest.mark.parametrize(
    ("name", "code", "words"),
    [
        ("rate1.wav", "Audio.AudioRateError", "1 Hz"),
        ("rf64_rate1.wav", "Audio.AudioRateError", "1 Hz"),
        ("flac_rate1.flac", "Audio.AudioRateError", "1 Hz"),
        ("rate100.wav", "Audio.AudioRateError", "100 Hz"),
        ("rate_4g_pcm.wav", DEC, "2147483647 Hz"),
        ("channels200.wav", DEC, "200 channels"),
        ("channels65535_align.wav", DEC, "channels"),
    ],
)
def test_absurd_headers_are_refused_unread(tmp_path, headers, check_cfg, no_decoding, name, code, words):
    p = tmp_path / name
    p.write_bytes(headers[name][0])
    v = check(p, check_cfg)
    assert v.code == code and words in v.message, v.message


def test_the_most_the_service_could_take_bounds_the_input(tmp_path, check_cfg, no_decoding, monkeypatch):
    """A header declaring more than MAX_INPUT_S is refused unread, with the service's too-long code."""
    monkeypatch.setattr(limits, "MAX_INPUT_S", 20.0)
    v = check(FIX / "speech_librivox_16k.wav", check_cfg)
    assert v.code == "InternalError" and "at most 20 s" in v.message


def test_a_lying_header_cannot_outrun_the_frame_budget(tmp_path, check_cfg, monkeypatch):
    """Decoding stops, block by block, once it produces more audio than the file's size allows."""
    x, sr = sf.read(FIX / "speech_librivox_16k.wav", dtype="float32")
    p = tmp_path / "a.mp3"
    from conftest import write_av

    write_av(p, x[np.newaxis, :], sr, "mp3", "libmp3lame", bit_rate=32_000)  # 4 frames per byte
    info = audio_io.probe(p)
    monkeypatch.setattr(limits, "MAX_FRAMES_PER_BYTE", 1)
    monkeypatch.setattr(limits, "SLACK_S", 0.0)
    budget = limits.frame_budget(info)
    assert budget < info.duration_s * sr / 2
    pulled = []
    real = audio_io._blocks_av

    def counted(*a: object, **k: object) -> Iterator[np.ndarray]:
        for block in real(*a, **k):  # type: ignore[arg-type]
            pulled.append(block.shape[1])
            yield block

    monkeypatch.setattr(audio_io, "_blocks_av", counted)
    with pytest.raises(PipelineError) as err:
        audio_io.decode(info)
    assert err.value.code == DEC and "more than a file of" in err.value.message
    assert sum(pulled[:-1]) <= budget < sum(pulled)  # stopped at the first block past the budget


def test_preallocation_never_trusts_a_huge_declared_length():
    """A header declaring 10^9 s: the output buffer is sized by what the file can hold, not by
    the header (numpy was asked for 64 TB), and the lie is reported as truncation."""
    info = dataclasses.replace(audio_io.probe(FIX / "speech_arctic_slt_16k.wav"), duration_s=1e9)
    with pytest.raises(PipelineError) as err:
        audio_io.decode(info)
    assert err.value.code == DEC and err.value.message.startswith("truncated: the header declares 1000000000.0 s")


# ---- special files, missing paths, odd names ---------------------------------------------------------


@pytest.fixture
def no_open(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every path opened through pipeline.limits' ``os.open``."""
    opened: list[str] = []
    real = os.open

    def watched(path: str, flags: int, *a: int) -> int:
        opened.append(os.fspath(path))
        return real(path, flags, *a)

    monkeypatch.setattr(limits.os, "open", watched)
    return opened


def test_special_files_are_refused_without_being_opened(tmp_path, check_cfg, no_open):
    fifo = tmp_path / "take.wav"
    os.mkfifo(fifo)
    sock_path = tmp_path / "s.wav"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        for p, kind in ((fifo, "FIFO"), (sock_path, "socket"), (Path("/dev/zero"), "character device")):
            v = check(p, check_cfg)
            assert v.code == DEC and v.message.startswith("not a regular file") and kind in v.message
    finally:
        sock.close()
    assert no_open == []


def test_odd_folder_entries_each_get_a_verdict(tmp_path, check_cfg, capsys, no_open):
    d = tmp_path / "takes"
    d.mkdir()
    good = d / "good.wav"
    good.write_bytes((FIX / "speech_librivox_16k.wav").read_bytes())
    os.mkfifo(d / "take.wav")
    (d / "broken.wav").symlink_to(d / "gone.wav")
    (d / "loop.mp3").symlink_to(d / "loop.mp3")
    (d / "folder.wav").mkdir()
    (d / ".hidden.wav").write_bytes(b"skipped")
    (d / "empty.m4a").write_bytes(b"")
    (d / "notes.txt").write_text("not audio")
    locked = d / "locked.wav"
    locked.write_bytes(good.read_bytes()[:1000])
    locked.chmod(0)
    found = [os.path.basename(p) for p in find([str(d)])]
    assert found == ["broken.wav", "empty.m4a", "good.wav", "locked.wav", "loop.mp3", "take.wav"]
    missing = tmp_path / "missing.wav"
    assert main(["check", "-v", str(d), str(missing)]) == 1
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert "Traceback" not in out.out + out.err
    verdicts = {line.split(": ")[0]: line for line in lines if ": warning " not in line}
    assert set(verdicts) == {str(d / n) for n in found} | {str(missing)}
    assert verdicts[str(good)].endswith(": ok")
    assert "broken link" in verdicts[str(d / "broken.wav")]
    assert "symbolic link loop" in verdicts[str(d / "loop.mp3")]
    assert "FIFO" in verdicts[str(d / "take.wav")]
    assert "no such file" in verdicts[str(missing)]
    assert all(DEC in v for k, v in verdicts.items() if k != str(good))
    assert str(d / "take.wav") not in no_open


def test_names_that_are_not_utf8_are_judged_and_printed(tmp_path):
    """`check` wrote these names with surrogates and died with UnicodeEncodeError; soundfile
    could not open them either. Run as a user would, through a pipe."""
    d = os.fsencode(tmp_path / "takes")
    os.mkdir(d)
    audio = (FIX / "speech_librivox_16k.wav").read_bytes()
    with open(d + b"/caf\xe9-\xff.wav", "wb") as fh:
        fh.write(audio)
    with open(d + b"/new\nline\xff.wav", "wb") as fh:
        fh.write(audio[:5000])
    cmd = [sys.executable, "-m", "pipeline", "check"]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    js = subprocess.run([*cmd, "--json", d], capture_output=True, env=env, check=False)
    assert js.returncode == 1 and b"Traceback" not in js.stderr, js.stderr
    rows = [json.loads(line) for line in js.stdout.decode("utf-8").splitlines()]
    by_name = {Path(r["path"]).name: r for r in rows}
    assert set(by_name) == {"caf\\xe9-\\xff.wav", "new\\x0aline\\xff.wav"}
    assert by_name["caf\\xe9-\\xff.wav"]["ok"] is True  # decoded like any other name
    assert by_name["new\\x0aline\\xff.wav"]["code"] == "Audio.DecoderError"
    lines = subprocess.run([*cmd, "-v", d], capture_output=True, env=env, check=False)
    assert lines.returncode == 1 and b"Traceback" not in lines.stderr
    text = [t for t in lines.stdout.decode("utf-8").splitlines() if ": warning " not in t]
    assert len(text) == 2 and text[0].endswith("caf\\xe9-\\xff.wav: ok")
    assert "new\\x0aline\\xff.wav: Audio.DecoderError: truncated" in text[1]


# ---- the table of hand-made bad headers, and the seeded fuzz ------------------------------------------


def test_every_bad_header_is_judged(tmp_path, headers, check_cfg, run_cfg):
    """Each hand-made header gets a service code (the expected one where it is certain) from
    `check` and from the `run` path, with a plain message."""
    for name, (data, expected) in headers.items():
        p = tmp_path / name
        p.write_bytes(data)
        v = check(p, check_cfg)
        assert not v.ok and v.code in SERVICE_CODES, (name, v)
        assert expected is None or v.code == expected, (name, v)
        _plain(v.message)
        r = process_file(Job(str(p), str(tmp_path / "out" / f"{name}.wav")), run_cfg)
        assert r.code in SERVICE_CODES, (name, r)
        _plain(r.message)


FUZZ_COUNT = 400
FUZZ_SEED = 16


def test_fuzzed_files_each_get_a_code_in_the_library_and_a_folder_run(tmp_path, fuzz_seeds, check_cfg, capsys):
    """A seeded mutation run (byte flips, truncations, insertions, header and box edits) over
    WAV, RF64, MP3 and M4A: every file gets a verdict with a service code from `pipeline.check`,
    and one `voiceprep check --json` over the folder gives the same verdicts, no traceback."""
    d = tmp_path / "fuzz"
    d.mkdir()
    for name, data in variants(fuzz_seeds, FUZZ_COUNT, FUZZ_SEED):
        (d / name).write_bytes(data)
    verdicts = {}
    for p in sorted(d.iterdir()):
        v = check(p, check_cfg)
        assert v.ok or v.code in SERVICE_CODES, (p.name, v)
        _plain(v.message)
        verdicts[str(p)] = v.code
    refused = sum(code is not None for code in verdicts.values())
    assert refused > FUZZ_COUNT // 2  # the mutations do break files
    assert main(["check", "--json", str(d)]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    rows = [json.loads(line) for line in out.out.splitlines()]
    assert {r["path"]: r["code"] for r in rows} == verdicts
