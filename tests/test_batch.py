"""Batches: resumable runs, one report line per input, clean stops, workers that die with the batch, names that never collide."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from conftest import FIXTURES
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import config
from pipeline.cli import main
from pipeline.executors import LocalPool
from pipeline.plan import output_names, plan

READER = FIXTURES / "speech_librivox_16k.wav"


def _folder(tmp_path: Path, n: int = 3) -> Path:
    """A folder of ``n`` takes: real speech (each a little quieter), plus one refused file."""
    src = tmp_path / "in"
    (src / "day1").mkdir(parents=True)
    x, sr = sf.read(READER, dtype="float32")
    for k in range(n):
        sf.write(src / ("day1" if k % 2 else "") / f"take{k}.wav", x * (0.9 - 0.1 * k), sr, subtype="PCM_16")
    sf.write(src / "silence.wav", np.zeros(sr * 12, np.float32), sr, subtype="PCM_16")
    return src


def _report(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _run(src: Path, out: Path, report: Path, *extra: str) -> int:
    return main(["run", str(src), "--out", str(out), "--report", str(report), "-q", "--jobs", "1", *extra])


def test_rerun_skips_unchanged_inputs_and_reports_each_once(tmp_path: Path):
    src, out, rep = _folder(tmp_path), tmp_path / "out", tmp_path / "r.jsonl"
    assert _run(src, out, rep) == 1  # the silent file is refused
    first = {Path(d["input"]).name: d for d in _report(rep)}
    assert len(first) == 4 and not any(d["skipped"] for d in first.values())
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}
    assert _run(src, out, rep) == 1
    second = _report(rep)
    assert len(second) == 4 and all(d["skipped"] for d in second)  # the report is rewritten, not appended
    assert len({d["run_id"] for d in second}) == 1 and second[0]["run_id"] != next(iter(first.values()))["run_id"]
    for d in second:  # the earlier verdicts, unchanged
        old = first[Path(d["input"]).name]
        assert (d["status"], d["code"], d["output"], d["segment"]) == (old["status"], old["code"], old["output"], old["segment"])
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")} == stamps  # nothing rewritten


def test_added_changed_and_touched_inputs(tmp_path: Path):
    src, out, rep = _folder(tmp_path), tmp_path / "out", tmp_path / "r.jsonl"
    _run(src, out, rep)
    x, sr = sf.read(READER, dtype="float32")
    sf.write(src / "new1.wav", 0.5 * x, sr, subtype="PCM_16")
    sf.write(src / "day1" / "new2.wav", 0.4 * x, sr, subtype="PCM_16")
    sf.write(src / "take0.wav", 0.3 * x, sr, subtype="PCM_16")  # same size, other content
    os.utime(src / "silence.wav", ns=(1, 1))  # touched only: same content
    _run(src, out, rep)
    done = {Path(d["input"]).name for d in _report(rep) if not d["skipped"]}
    assert done == {"new1.wav", "new2.wav", "take0.wav"}
    assert len(_report(rep)) == 6


def test_a_changed_option_or_force_redoes_everything(tmp_path: Path):
    src, out, rep = _folder(tmp_path), tmp_path / "out", tmp_path / "r.jsonl"
    _run(src, out, rep)
    text = (Path(config.default_config_path())).read_text().replace("target_lufs: -20.0", "target_lufs: -22.0")
    other = tmp_path / "p.yaml"
    other.write_text(text)
    _run(src, out, rep, "--config", str(other))
    lines = _report(rep)
    assert not any(d["skipped"] for d in lines)
    assert all(abs(d["metrics"]["loudness_lufs"] + 22.0) < 0.5 for d in lines if d["status"] == "ok")
    _run(src, out, rep, "--config", str(other), "--force")
    assert not any(d["skipped"] for d in _report(rep))


def test_outputs_of_vanished_inputs_are_listed_and_pruned_only_when_asked(tmp_path: Path, capsys):
    src, out, rep = _folder(tmp_path), tmp_path / "out", tmp_path / "r.jsonl"
    _run(src, out, rep)
    (src / "take0.wav").unlink()
    capsys.readouterr()
    _run(src, out, rep)
    assert "take0.wav" in capsys.readouterr().err and (out / "take0.wav").exists()
    _run(src, out, rep, "--prune")
    assert not (out / "take0.wav").exists()


def test_outputs_get_ordinary_permissions(tmp_path: Path):
    old = os.umask(0o022)
    try:
        src, out = _folder(tmp_path, 1), tmp_path / "out"
        _run(src, out, tmp_path / "r.jsonl")
    finally:
        os.umask(old)
    assert stat.S_IMODE((out / "take0.wav").stat().st_mode) == 0o644


def test_json_prints_the_report_lines(tmp_path: Path, capsys):
    src, out = _folder(tmp_path, 1), tmp_path / "out"
    main(["run", str(src), "--out", str(out), "--json", "--jobs", "1"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(Path(d["input"]).name for d in lines) == ["silence.wav", "take0.wav"]


def test_out_may_not_replace_or_reread_inputs(tmp_path: Path, capsys):
    src = _folder(tmp_path, 1)
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    assert main(["run", str(src), "--out", str(src)]) == 2
    assert "input" in capsys.readouterr().err
    assert main(["run", str(src / "take0.wav"), "--out", str(src)]) == 2
    (tmp_path / "afile").write_text("x")
    assert main(["run", str(src), "--out", str(tmp_path / "afile")]) == 2
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before
    inside = src / "clean"
    for _ in range(2):  # the output folder inside the input is never taken as input
        main(["run", str(src), "--out", str(inside), "-q", "--jobs", "1"])
    assert sorted(p.relative_to(inside).as_posix() for p in inside.rglob("*.wav")) == ["take0.wav"]


def test_several_inputs_never_share_an_output(tmp_path: Path):
    for d in ("d1", "d2", "x/d1"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "a.wav").write_bytes(b"x")
    (tmp_path / "d1" / "a.mp3").write_bytes(b"x")
    (tmp_path / "d1" / "a.mp3.wav").write_bytes(b"x")
    jobs = list(plan([str(tmp_path / "d1"), str(tmp_path / "d2"), str(tmp_path / "x" / "d1")], tmp_path / "o"))
    outs = [j.output for j in jobs]
    assert len(jobs) == 5 and len(set(outs)) == 5
    assert sorted(os.path.relpath(o, tmp_path / "o") for o in outs) == [
        "d1/a.mp3.wav", "d1/a.mp3~2.wav", "d1/a.wav", "d1~2/a.wav", "d2/a.wav"]


NAME = st.text(alphabet="abAB.~_ -", min_size=1, max_size=8).filter(lambda s: s not in (".", "..") and "/" not in s)
SUFFIX = st.sampled_from([".wav", ".WAV", ".mp3", ".m4a", ".mp3.wav", ".wav.wav", ".flac", ""])


@settings(max_examples=150, deadline=None)
@given(files=st.lists(st.tuples(NAME, SUFFIX), max_size=12), dirs=st.lists(NAME, max_size=3))
def test_output_names_are_injective(files: list[tuple[str, str]], dirs: list[str]):
    names = sorted({stem + suffix for stem, suffix in files} - set(dirs))
    out = output_names(names, taken=dirs)
    assert set(out) == set(names)
    assert len(set(out.values())) == len(names)  # distinct files, distinct outputs
    assert not set(out.values()) & set(dirs)  # and never a subfolder's name
    assert all(v.endswith(".wav") for v in out.values())


def test_a_worker_that_dies_costs_only_its_file_and_is_replaced():
    pool = LocalPool(2)
    results = dict(pool.map(_die_on_three, ((k, k) for k in range(8)), lambda k, t, why: f"crashed: {why}"))
    assert results[3].startswith("crashed") and "died" in results[3]
    assert {k: v for k, v in results.items() if k != 3} == {k: k * 10 for k in range(8) if k != 3}


def _die_on_three(k: int) -> int:
    if k == 3:
        os._exit(9)
    return k * 10


def _spawn_run(src: Path, out: Path, rep: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", str(src), "--out", str(out), "--report", str(rep), "--jobs", "2", "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )


def _many(tmp_path: Path, n: int) -> Path:
    src = tmp_path / "many"
    src.mkdir()
    for k in range(n):
        shutil.copy(READER, src / f"t{k:02d}.wav")
    return src


def _wait_for_outputs(out: Path, proc: subprocess.Popen[bytes], at_least: int = 1) -> None:
    for _ in range(600):
        if len(list(out.rglob("*.wav"))) >= at_least or proc.poll() is not None:
            return
        time.sleep(0.1)


def _no_partial_files(out: Path) -> None:
    assert not list(out.rglob("*.part")) and not list(out.rglob("*-journal"))


def test_ctrl_c_stops_the_batch_leaving_nothing_partial(tmp_path: Path):
    src, out, rep = _many(tmp_path, 12), tmp_path / "out", tmp_path / "r.jsonl"
    proc = _spawn_run(src, out, rep)
    _wait_for_outputs(out, proc)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    _no_partial_files(out)
    lines = _report(rep)
    assert len(lines) == len({d["input"] for d in lines}) < 12  # consistent: one line per finished input
    for d in lines:
        if d["status"] == "ok":
            assert sf.info(d["output"]).frames > 0


def test_killed_batch_finishes_on_the_next_run(tmp_path: Path):
    src, out, rep = _many(tmp_path, 12), tmp_path / "out", tmp_path / "r.jsonl"
    proc = _spawn_run(src, out, rep)
    _wait_for_outputs(out, proc, at_least=2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert main(["run", str(src), "--out", str(out), "--report", str(rep), "-q", "--jobs", "2"]) == 0
    lines = _report(rep)
    assert sorted(Path(d["input"]).name for d in lines) == [f"t{k:02d}.wav" for k in range(12)]
    assert all(d["status"] == "ok" for d in lines)
    for p in out.rglob("*.wav"):
        y, sr = sf.read(p)
        assert 10.0 <= len(y) / sr <= 20.0
    _no_partial_files(out)


def test_workers_die_with_their_parent(tmp_path: Path):
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, time\n"
        "from pipeline.executors import LocalPool\n"
        "def slow(k):\n    time.sleep(300)\n"
        "pool = LocalPool(2)\n"
        "it = pool.map(slow, ((k, k) for k in range(4)), lambda k, t, w: None)\n"
        "import threading; threading.Thread(target=lambda: list(it), daemon=True).start()\n"
        "time.sleep(300)\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], cwd=Path(__file__).resolve().parent.parent)
    children: list[int] = []
    for _ in range(300):
        children = _children(proc.pid)
        if len(children) >= 2:
            break
        time.sleep(0.1)
    assert len(children) >= 2
    proc.kill()
    proc.wait()
    for _ in range(300):
        if not any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in children):
            break
        time.sleep(0.1)
    assert not any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in children)


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(p.name))
    return out


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_a_worker_killed_mid_batch_costs_only_its_file(tmp_path: Path):
    """SIGKILL one worker of a real `voiceprep run --jobs 2` while it works: that file is reported
    as lost, every other input completes, and a fresh worker keeps the pool at full width."""
    src, out, rep = _many(tmp_path, 8), tmp_path / "out", tmp_path / "r.jsonl"
    proc = _spawn_run(src, out, rep)
    workers: list[int] = []
    for _ in range(600):
        workers = _children(proc.pid)
        if len(workers) >= 2 or proc.poll() is not None:
            break
        time.sleep(0.05)
    assert len(workers) >= 2
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode in (0, 1), err
    lines = _report(rep)
    assert sorted(Path(d["input"]).name for d in lines) == [f"t{k:02d}.wav" for k in range(8)]
    lost = [d for d in lines if d["status"] != "ok"]
    assert len(lost) == 1  # the file its worker held (workers are busy all but microseconds between files)
    for d in lost:
        assert d["code"] == "voiceprep.UnexpectedError" and "died" in d["message"]
    _no_partial_files(out)
