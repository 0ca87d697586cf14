"""The command line through main([...]): exit codes and printed lines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from pipeline import registry
from pipeline.cli import main

FIX = Path(__file__).resolve().parent.parent / "fixtures"


def test_check_passing_file_prints_nothing_and_exits_0(capsys):
    assert main(["check", str(FIX / "speech_librivox_16k.wav")]) == 0
    assert capsys.readouterr().out == ""


def test_check_failing_file_prints_one_line_and_exits_1(tmp_path: Path, capsys):
    p = tmp_path / "quiet.wav"
    sf.write(p, np.zeros(16000 * 12, np.float32), 16000, subtype="PCM_16")
    assert main(["check", str(p), str(FIX / "speech_librivox_16k.wav")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [out[0]] and out[0].startswith(f"{p}: Audio.AudioSilentError: only 0.0 s of speech")


def test_check_folder_json_lines(tmp_path: Path, capsys):
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "sub" / "a.wav", np.zeros(16000 * 2, np.float32), 16000, subtype="PCM_24")
    (tmp_path / "notes.txt").write_text("not audio, skipped when walking a folder")
    assert main(["check", "--json", str(tmp_path)]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 1
    rec = lines[0]
    assert rec["code"] == "BadRequest.UnsupportedFileFormat" and rec["metrics"]["bit_depth"] == 24
    assert {"speech_s", "longest_speech_s", "longest_pause_s", "duration_s", "size_bytes"} <= set(rec["metrics"])


def test_check_missing_path_is_that_files_refusal(capsys):
    """A missing path is refused like a bad file (issue 16): the other files are still judged."""
    good = str(FIX / "speech_librivox_16k.wav")
    assert main(["check", "-v", "/nonexistent/take.wav", good]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "/nonexistent/take.wav: Audio.DecoderError: no such file (check the path)"
    assert out[1] == f"{good}: ok"


def test_check_broken_file_is_decoder_error_not_traceback(tmp_path: Path, capsys):
    p = tmp_path / "broken.m4a"
    p.write_bytes(b"\x00\x00\x00\x18ftypM4A " + b"\x13" * 500)
    assert main(["check", str(p)]) == 1
    out = capsys.readouterr()
    assert "Audio.DecoderError" in out.out and "Traceback" not in out.out + out.err


def test_no_command_and_bad_flags_exit_2(capsys):
    assert main([]) == 2
    assert main(["check"]) == 2
    assert main(["frobnicate"]) == 2


def test_stages_lists_every_stage_with_options(capsys):
    assert main(["stages"]) == 0
    out = capsys.readouterr().out
    for name, cls in registry.available().items():
        assert f"{name}  (" in out
        for opt in registry.options(cls):
            assert f"    {opt.name}: " in out
            assert opt.help, f"{name}.{opt.name} has no help text"
    assert main(["stages", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {d["name"] for d in data} == set(registry.available())


def test_help_documents_codes(capsys):
    assert main(["check", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Audio.AudioShortError" in out and "exit codes" in out


def test_check_writes_nothing(tmp_path: Path):
    p = tmp_path / "a.wav"
    sf.write(p, np.zeros(1600, np.float32), 16000, subtype="PCM_16")
    before = {q: q.stat().st_mtime_ns for q in tmp_path.iterdir()}
    main(["check", str(tmp_path)])
    assert {q: q.stat().st_mtime_ns for q in tmp_path.iterdir()} == before


def test_console_script_exit_codes_and_piped_output(tmp_path: Path):
    """The installed entry point (`python -m pipeline`, as the console script): `check` leaves
    through a fast exit once its output is flushed, so codes and piped lines must survive it."""
    import subprocess
    import sys

    short = tmp_path / "short.wav"
    x, sr = sf.read(FIX / "speech_arctic_slt_16k.wav", dtype="float32")
    sf.write(short, x, sr, subtype="PCM_16")
    run = [sys.executable, "-m", "pipeline", "check", "--json"]
    bad = subprocess.run([*run, str(short), str(FIX / "speech_librivox_16k.wav")], capture_output=True, text=True)
    assert bad.returncode == 1, bad.stderr
    rows = [json.loads(line) for line in bad.stdout.splitlines()]
    assert [r["ok"] for r in rows] == [False, True]
    assert rows[0]["code"] == "Audio.AudioSilentError" and rows[1]["metrics"]["speech_s"] > 10
    good = subprocess.run([*run, str(FIX / "speech_librivox_16k.wav")], capture_output=True, text=True)
    assert good.returncode == 0 and len(good.stdout.splitlines()) == 1
    missing = subprocess.run([sys.executable, "-m", "pipeline", "check", str(tmp_path / "nope.wav")],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "Audio.DecoderError: no such file" in missing.stdout


def test_closed_pipe_stops_quietly(tmp_path: Path):
    """`voiceprep check --json DIR | head -1`: when the reader goes away, no traceback, exit 141.
    The pipe holds one page and the lines after the first hold more than that (each names its
    long path), so once the first line is read and the pipe closed, `check` must still write
    into the closed pipe, however fast or slow it runs."""
    import fcntl
    import os
    import subprocess
    import sys

    folder = tmp_path / ("d" * 200)
    folder.mkdir()
    names = [f"{'t' * 150}{k:03d}.wav" for k in range(40)]
    for name in names:
        (folder / name).write_bytes(b"not audio " * 10)  # a verdict at once: no decoding
    read_end, write_end = os.pipe()
    capacity = fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    assert sum(len(str(folder / n)) for n in names[1:]) > capacity  # what is left cannot all fit
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "check", "--json", str(folder)],
                            stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    assert proc.stderr is not None
    first = b""
    while not first.endswith(b"\n"):  # byte by byte: nothing past the first line is taken out
        byte = os.read(read_end, 1)
        assert byte, "check ended before its first line"
        first += byte
    os.close(read_end)
    assert json.loads(first)["path"] == str(folder / names[0])
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err


def test_console_script_runs_numpy_on_one_blas_thread():
    """The entry point asks BLAS for one thread before numpy loads (its helper thread only spun);
    a number the user set is kept. Threads are counted in /proc, so this is Linux-only."""
    import os
    import subprocess
    import sys

    import pytest

    if not os.path.isdir("/proc/self/task") or (os.cpu_count() or 1) < 2:
        pytest.skip("needs Linux /proc and at least two cores (the BLAS default is one thread per core)")
    probe = (
        "import os, sys\n"
        "from pipeline import cli\n"
        "if sys.argv[1] == 'console':\n"
        "    cli.one_blas_thread()\n"
        "import numpy\n"
        "print(len(os.listdir('/proc/self/task')), os.environ.get('OPENBLAS_NUM_THREADS'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}

    def threads(mode: str, **extra: str) -> tuple[int, str]:
        out = subprocess.run([sys.executable, "-c", probe, mode], capture_output=True, text=True, check=True,
                             env={**env, **extra}).stdout.split()
        return int(out[0]), out[1]

    assert threads("console") == (1, "1")
    assert threads("library")[0] > 1  # a plain import leaves the library's default alone
    assert threads("console", OPENBLAS_NUM_THREADS="2") == (2, "2")


def test_pre_commit_hook_takes_every_suffix_check_reads_in_any_case():
    import re

    import yaml

    from pipeline.plan import AUDIO_SUFFIXES

    hook = yaml.safe_load((Path(__file__).resolve().parent.parent / ".pre-commit-hooks.yaml").read_text())[0]
    pattern = re.compile(hook["files"])
    for suffix in AUDIO_SUFFIXES:
        for name in (f"take{suffix}", f"TAKE{suffix.upper()}", f"dir/Take{suffix.title()}"):
            assert pattern.search(name), name
    for name in ("notes.txt", "take.wav.txt", "wav"):
        assert not pattern.search(name), name
    assert hook["entry"] == "voiceprep check"
