"""Benchmark (not a test): `voiceprep run --executor dask` on a real loopback cluster of 1 and of 2 workers.

    python tests/tools/dask_scale.py [--repeats 5] [--keep DIR]

Builds the benchmark folder (tests/tools/benchmark.py's ``build_mixed``: 7 recordings, 28.7 min of
mixed WAV/MP3/M4A), starts `dask scheduler` on 127.0.0.1, then for 1 and 2 workers
`dask worker --nworkers N --nthreads 1`; each cluster first runs the batch once (the workers
import numpy, PyAV and onnxruntime and load the models: "cold"), then ``repeats`` timed runs
(fresh processes of `voiceprep run --force` into an emptied folder, each started once the
machine has been quiet for a second, if it gets so within a minute; the two clusters, each with
its own scheduler, stay up throughout and the runs alternate, so both see the same state of the
machine). `--executor local --jobs 1` and `--jobs 2` are timed the same way for reference.

This machine is shared: beside each run's wall time, the script measures how many cores other
processes kept busy meanwhile (the machine's busy CPU time from /proc/stat, less that of the
run and of the clusters' processes, over the wall time), and quotes the speed-ups (ratios of
median wall times) both over every run and over the quiet runs (others below 0.25 of a core).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import ENV, MIXED, ROOT, VOICEPREP, _compile, build_mixed, scratch

START_TIMEOUT_S = 120.0


QUIET_CORES = 0.25
QUIET_WAIT_S = 60.0
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split(" ", 3)[:3])


def _busy_s() -> float:
    """CPU seconds the whole machine has spent busy since it started."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle, iowait
    return (sum(fields[:8]) - idle) * TICK_S


def _session_cpu_s(sessions: set[int]) -> float:
    """CPU seconds of every live process in these sessions (the clusters' processes)."""
    total = 0.0
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) in sessions:  # field 6 of stat: the session id
            total += (int(fields[11]) + int(fields[12])) * TICK_S  # utime, stime
    return total


def _wait_for(address: str, n: int) -> None:
    from distributed import Client

    with Client(address, timeout=START_TIMEOUT_S, set_as_default=False) as client:
        client.wait_for_workers(n, timeout=START_TIMEOUT_S)


def _await_quiet(sessions: set[int], wait_s: float) -> None:
    """Wait (at most ``wait_s``) for a second in which other processes keep less than a tenth of
    a core busy, so that a run starts on a quiet machine when there is one."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        busy, ours = _busy_s(), _session_cpu_s(sessions)
        time.sleep(1.0)
        if (_busy_s() - busy) - (_session_cpu_s(sessions) - ours) < 0.1:
            return


def _timed_run(mixed: Path, out: Path, how: list[str], sessions: set[int]) -> tuple[float, float]:
    """(wall seconds, cores other processes kept busy meanwhile) of a fresh `voiceprep run`."""
    import resource

    shutil.rmtree(out, ignore_errors=True)
    _await_quiet(sessions, QUIET_WAIT_S)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy, ours = _busy_s(), _session_cpu_s(sessions)
    t = time.perf_counter()
    subprocess.run([*VOICEPREP, "run", str(mixed), "--out", str(out), "-q", "--force", *how],
                   check=False, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    run_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    others = (_busy_s() - busy) - run_cpu - (_session_cpu_s(sessions) - ours)
    return wall, max(0.0, others / wall)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--keep", metavar="DIR", help="build inputs here and keep them (default: a temporary folder)")
    args = ap.parse_args()
    with scratch(args.keep, "voiceprep-dask-bench-") as tmp:
        result = _measure(tmp, args.repeats)
    for key, value in result.items():
        print(f"{key}: {json.dumps(value)}")
    return 0


def _measure(tmp: Path, repeats: int) -> dict[str, object]:
    """Both clusters up, the cold batches, then ``repeats`` alternated rounds of every way."""
    mixed = tmp / "mixed"
    if not mixed.exists():
        build_mixed(mixed)
    _compile()
    load_before = _load()
    dask_cli = [sys.executable, "-m", "dask"]
    procs: list[subprocess.Popen[bytes]] = []

    sessions: set[int] = set()

    def start(cmd: list[str], info: Path) -> None:
        procs.append(subprocess.Popen([*dask_cli, *cmd, "--scheduler-file", str(info), "--no-dashboard",
                                       "--dashboard-address", "127.0.0.1:0"], cwd=tmp,
                                      env=ENV, start_new_session=True, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        sessions.add(procs[-1].pid)  # each its own session (start_new_session)

    times: dict[str, list[tuple[float, float]]] = {"dask 1 worker": [], "dask 2 workers": [],
                                                   "local --jobs 1": [], "local --jobs 2": []}
    cold: dict[str, float] = {}
    how: dict[str, list[str]] = {"local --jobs 1": ["--jobs", "1"], "local --jobs 2": ["--jobs", "2"]}
    try:
        for n in (1, 2):  # two clusters, each with its own scheduler, both up throughout
            info = tmp / f"scheduler-{n}.json"
            info.unlink(missing_ok=True)
            start(["scheduler", "--host", "127.0.0.1", "--port", "0"], info)
            deadline = time.monotonic() + START_TIMEOUT_S
            while not info.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            start(["worker", "--nworkers", str(n), "--nthreads", "1", "--host", "127.0.0.1"], info)
            address = json.loads(info.read_text())["address"]
            _wait_for(address, n)
            name = "dask 1 worker" if n == 1 else "dask 2 workers"
            how[name] = ["--executor", "dask", "--scheduler", address]
            cold[name] = _timed_run(mixed, tmp / "out", how[name], sessions)[0]  # the workers' imports, models
        for _ in range(repeats):  # alternated, so that every way sees the same state of the machine
            for name in times:
                times[name].append(_timed_run(mixed, tmp / "out", how[name], sessions))
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGKILL)  # the process and the workers it started
            proc.wait()
    audio_s = sum(m[1] for m in MIXED)

    def speedup(slow: str, fast: str, quiet: bool) -> dict[str, object]:
        """The ratio of the median wall times (of the runs during which others kept less than
        QUIET_CORES busy, when ``quiet``), with how many runs of each went in."""
        a = [w for w, others in times[slow] if others < QUIET_CORES or not quiet]
        b = [w for w, others in times[fast] if others < QUIET_CORES or not quiet]
        ratio = round(statistics.median(a) / statistics.median(b), 2) if a and b else None
        return {"ratio_of_medians": ratio, "runs": [len(a), len(b)]}

    return {
        "audio_s": audio_s,
        "repeats": repeats,
        "load_before": load_before,
        "load_after": _load(),
        "cold_first_batch_s": {k: round(v, 2) for k, v in cold.items()},
        "wall_s_median": {k: round(statistics.median(w for w, _ in v), 2) for k, v in times.items()},
        "runs_wall_s_and_other_cores": {k: [(round(w, 2), round(o, 2)) for w, o in v] for k, v in times.items()},
        "dask_2_over_1_workers": {"all rounds": speedup("dask 1 worker", "dask 2 workers", False),
                                  "quiet rounds": speedup("dask 1 worker", "dask 2 workers", True)},
        "local_jobs_2_over_1": {"all rounds": speedup("local --jobs 1", "local --jobs 2", False),
                                "quiet rounds": speedup("local --jobs 1", "local --jobs 2", True)},
    }


if __name__ == "__main__":
    sys.exit(main())
