"""Batches: resumable runs, one report line per input, clean stops, workers that die with the batch, names that never collide."""

from __future__ import annotations

import contextlib
import json
import os
import select
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
from pipeline.runner import run_batch

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


class _Recording:
    """An executor of several workers (as the runner sees it) that runs each task here, in the
    order it is handed them, and notes that order."""

    def __init__(self) -> None:
        self.order: list[str] = []

    def map(self, fn, tasks, crashed):
        for key, job in tasks:
            self.order.append(Path(job.input).name)
            yield key, fn(job)

    def stop(self) -> list[int]:
        return []


def test_several_workers_start_with_the_largest_inputs(tmp_path: Path):
    # a long recording handed out last keeps one worker busy while the others idle
    src = tmp_path / "in"
    src.mkdir()
    x, sr = sf.read(READER, dtype="float32")
    for name, seconds in (("a_short", 12), ("b_long", 30), ("c_mid", 20), ("d_mid", 20)):
        sf.write(src / f"{name}.wav", x[: sr * seconds], sr, subtype="PCM_16")
    cfg = config.load()
    executor = _Recording()
    results: list = []
    run_batch(plan([str(src)], tmp_path / "out"), cfg, tmp_path / "out", executor=executor, on_result=results.append)
    assert executor.order == ["b_long.wav", "c_mid.wav", "d_mid.wav", "a_short.wav"]  # equal sizes: plan order
    assert len(results) == 4
    serial: list = []
    run_batch(plan([str(src)], tmp_path / "out2"), cfg, tmp_path / "out2", jobs=1, on_result=serial.append)
    assert [Path(r.input).name for r in serial] == ["a_short.wav", "b_long.wav", "c_mid.wav", "d_mid.wav"]


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


GATE = Path(__file__).resolve().parent / "batch_gate.py"
HANG_GUARD_S = 120.0  # reached only when something is broken


class Gates:
    """A real `voiceprep run --jobs 2` (its own process group) whose workers tell the test each input
    they take (pid and name, in ``taken``) and hold the inputs named in ``held`` until ``release``:
    a signal then lands at a known point of the batch, never after a guessed delay."""

    def __init__(self, src: Path, out: Path, rep: Path, held: tuple[str, ...] = ()) -> None:
        self.told, told_w = os.pipe()
        self.holds = {name: os.pipe() for name in held}
        gates = [f"{name}={r}" for name, (r, _) in self.holds.items()]
        run = ["run", str(src), "--out", str(out), "--report", str(rep), "--jobs", "2", "-q"]
        self.proc = subprocess.Popen(
            [sys.executable, str(GATE), str(told_w), *gates, "--", *run],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
            pass_fds=(told_w, *(r for r, _ in self.holds.values())),
        )
        os.close(told_w)
        for r, _ in self.holds.values():
            os.close(r)
        self.taken: list[tuple[int, str]] = []
        self._rest = b""

    def __enter__(self) -> Gates:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for _, w in self.holds.values():
            with contextlib.suppress(OSError):
                os.close(w)
        os.close(self.told)

    def _read(self) -> bool:
        """Take in what the workers told; False at the end (every worker and the run gone)."""
        ready, _, _ = select.select([self.told], [], [], HANG_GUARD_S)
        assert ready, "the batch went silent past the hang guard"
        chunk = os.read(self.told, 4096)
        *lines, self._rest = (self._rest + chunk).split(b"\n")
        self.taken += [(int(pid), name.decode()) for pid, name in (line.split(b" ", 1) for line in lines)]
        return bool(chunk)

    def taker(self, name: str) -> int:
        """The pid of the worker that took ``name``, once one has."""
        while True:
            pid = next((p for p, n in self.taken if n == name), None)
            if pid is not None:
                return pid
            assert self._read(), f"the batch ended without taking {name}"

    def release(self, name: str) -> None:
        os.close(self.holds[name][1])

    def finish(self) -> str:
        """Wait for the run's end; its stderr."""
        _, err = self.proc.communicate(timeout=HANG_GUARD_S)
        while self._read():
            pass
        return err.decode()


def _many(tmp_path: Path, n: int) -> Path:
    src = tmp_path / "many"
    src.mkdir()
    for k in range(n):
        shutil.copy(READER, src / f"t{k:02d}.wav")
    return src


def _wait_for_outputs(out: Path, proc: subprocess.Popen[bytes], at_least: int = 1) -> None:
    """Until ``at_least`` outputs are written (polled: a hang guard, the batch cannot end meanwhile)."""
    deadline = time.monotonic() + HANG_GUARD_S
    while len(list(out.rglob("*.wav"))) < at_least:
        assert proc.poll() is None and time.monotonic() < deadline, "the batch wrote no output"
        time.sleep(0.05)


def _no_partial_files(out: Path) -> None:
    assert not list(out.rglob("*.part")) and not list(out.rglob("*-journal"))


def test_ctrl_c_stops_the_batch_leaving_nothing_partial(tmp_path: Path):
    src, out, rep = _many(tmp_path, 12), tmp_path / "out", tmp_path / "r.jsonl"
    with Gates(src, out, rep, held=("t01.wav",)) as run:
        run.taker("t01.wav")  # held by its worker: the batch cannot end before the signal
        _wait_for_outputs(out, run.proc)
        os.killpg(run.proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
        err = run.finish()
    assert run.proc.returncode == 130, err
    _no_partial_files(out)
    lines = _report(rep)
    names = [Path(d["input"]).name for d in lines]
    assert len(names) == len(set(names)) and "t01.wav" not in names  # one line per finished input
    assert not (out / "t01.wav").exists()
    for d in lines:
        if d["status"] == "ok":
            assert sf.info(d["output"]).frames > 0


SLOW_STOP = """
import sys, threading, time
from pipeline import config
from pipeline.plan import plan
from pipeline.runner import run_batch

class SlowToStop:
    # a cluster that takes its time to cancel: the first Ctrl-C waits on it
    def map(self, fn, tasks, crashed):
        next(iter(tasks))
        print("started", flush=True)
        threading.Event().wait()
        yield from ()

    def stop(self):
        print("stopping", flush=True)
        time.sleep(60)
        return []

try:
    run_batch(plan([sys.argv[1]], sys.argv[2]), config.load(), sys.argv[2], executor=SlowToStop())
except KeyboardInterrupt:
    sys.exit(130)
sys.exit(0)
"""


def test_a_second_ctrl_c_stops_at_once(tmp_path: Path):
    src = _folder(tmp_path, 2)
    proc = subprocess.Popen([sys.executable, "-c", SLOW_STOP, str(src), str(tmp_path / "out")], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.stdout.readline().strip() == "stopping"  # the first Ctrl-C waits on the executor
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=10) == 130  # not the 60 s the executor would take
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_killed_batch_finishes_on_the_next_run(tmp_path: Path):
    src, out, rep = _many(tmp_path, 6), tmp_path / "out", tmp_path / "r.jsonl"
    with Gates(src, out, rep, held=("t01.wav",)) as run:
        run.taker("t01.wav")  # the batch cannot end before the kill
        _wait_for_outputs(out, run.proc, at_least=2)
        os.killpg(run.proc.pid, signal.SIGKILL)
        run.proc.wait(timeout=HANG_GUARD_S)
    assert main(["run", str(src), "--out", str(out), "--report", str(rep), "-q", "--jobs", "2"]) == 0
    lines = _report(rep)
    assert sorted(Path(d["input"]).name for d in lines) == [f"t{k:02d}.wav" for k in range(6)]
    assert all(d["status"] == "ok" for d in lines)
    assert sum(not d["skipped"] for d in lines) >= 1  # the held input at least was done by this run
    for p in out.rglob("*.wav"):
        y, sr = sf.read(p)
        assert 10.0 <= len(y) / sr <= 20.0
    _no_partial_files(out)


WORKERS_PARENT = """
import os, signal, sys, threading
from pipeline.executors import LocalPool
told = int(sys.argv[1])
def held(k):
    os.write(told, f"{os.getpid()}\\n".encode())
    signal.pause()
pool = LocalPool(2)
it = pool.map(held, ((k, k) for k in range(4)), lambda k, t, w: None)
threading.Thread(target=lambda: list(it), daemon=True).start()
signal.pause()
"""


def test_workers_die_with_their_parent(tmp_path: Path):
    told, told_w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", WORKERS_PARENT, str(told_w)], pass_fds=(told_w,),
                            cwd=Path(__file__).resolve().parent.parent)
    os.close(told_w)
    handles: list[int] = []
    try:
        said = b""
        while said.count(b"\n") < 2:  # both workers are at work
            ready, _, _ = select.select([told], [], [], HANG_GUARD_S)
            assert ready, "the workers did not start"
            chunk = os.read(told, 64)
            assert chunk, "the parent ended before its workers started"
            said += chunk
        handles = [os.pidfd_open(int(pid)) for pid in said.split()]  # readable once that process has ended
        proc.kill()
        proc.wait()
        for fd in handles:
            ready, _, _ = select.select([fd], [], [], HANG_GUARD_S)
            assert ready, "a worker outlived its parent"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for fd in handles:  # a worker that outlived its parent is ended here
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            os.close(fd)
        os.close(told)


def test_a_worker_killed_mid_batch_costs_only_its_file(tmp_path: Path):
    """SIGKILL one worker of a real `voiceprep run --jobs 2` while it works: that file is reported
    as lost, every other input completes, and a fresh worker keeps the pool at full width."""
    src, out, rep = _many(tmp_path, 6), tmp_path / "out", tmp_path / "r.jsonl"
    with Gates(src, out, rep, held=("t03.wav", "t04.wav")) as run:
        victim = run.taker("t03.wav")
        other = run.taker("t04.wav")  # both workers held: nothing else is running
        os.kill(victim, signal.SIGKILL)
        fresh = run.taker("t05.wav")  # the other worker still holds t04: only a new one can take t05
        run.release("t04.wav")
        err = run.finish()
    assert run.proc.returncode == 1, err
    assert fresh not in (victim, other) and {pid for pid, _ in run.taken} == {victim, other, fresh}
    lines = _report(rep)
    assert sorted(Path(d["input"]).name for d in lines) == [f"t{k:02d}.wav" for k in range(6)]
    (lost,) = [d for d in lines if d["status"] != "ok"]
    assert Path(lost["input"]).name == "t03.wav" and not (out / "t03.wav").exists()
    assert lost["code"] == "voiceprep.UnexpectedError" and "died" in lost["message"]
    assert sorted(p.name for p in out.rglob("*.wav")) == [f"t{k:02d}.wav" for k in range(6) if k != 3]
    _no_partial_files(out)
