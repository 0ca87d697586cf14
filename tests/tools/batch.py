"""Batch benchmarks (not tests): reruns, Ctrl-C, memory over many inputs, worker scaling.

    python tests/tools/batch.py rerun      # first run vs rerun of an unchanged 49-file and 1,000-file folder
    python tests/tools/batch.py interrupt  # Ctrl-C (SIGINT to the process group) on a 150-file batch
    python tests/tools/batch.py memory     # runner peak RSS on 1,000 / 10,000 / 100,000 tiny inputs
    python tests/tools/batch.py jobs       # --jobs 2 against --jobs 1 on the benchmark folder and on 49 takes
    python tests/tools/batch.py all

Each figure comes from fresh `voiceprep` processes; inputs are built from fixtures/ in a
temporary folder (or --keep DIR).
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

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import ENV, FIX, ROOT, build_mixed, scratch

VOICEPREP = [sys.executable, "-m", "pipeline"]
ROUNDS = 5  # of the alternated --jobs 1 / --jobs 2 runs: this machine drifts by +-20 % from minute to minute


def takes(folder: Path, n: int, seed: int = 0) -> None:
    """``n`` takes of real speech (the LibriVox reader at several levels, over room noise, at 16,
    22.05, 44.1 and 48 kHz), 20-26 s each."""
    folder.mkdir(parents=True, exist_ok=True)
    x, sr = sf.read(FIX / "speech_librivox_16k.wav", dtype="float32")
    room, _ = sf.read(FIX / "noise_room_ami_16k.flac", dtype="float32")
    rng = np.random.default_rng(seed)
    rates = (16000, 22050, 44100, 48000)
    for k in range(n):
        start = int(rng.uniform(0, 6) * sr)
        y = x[start:] * np.float32(rng.uniform(0.3, 1.0))
        y = y + room[: len(y)] * np.float32(rng.uniform(0.0, 0.05))
        rate = rates[k % len(rates)]
        if rate != sr:
            y = soxr.resample(y, sr, rate).astype(np.float32)
        sf.write(folder / f"take{k:04d}.wav", y, rate, subtype="PCM_16")


def timed(cmd: list[str]) -> tuple[float, int, int]:
    """Wall seconds, peak RSS (KB) and exit code of a fresh process."""
    t = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True, cwd=ROOT, env=ENV,
                          check=False)
    wall = time.perf_counter() - t
    rss = int(proc.stderr.strip().splitlines()[-1]) if proc.stderr.strip() else -1
    return wall, rss, proc.returncode


def bench_rerun(tmp: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for n in (49, 1000):
        src, dst = tmp / f"takes{n}", tmp / f"out{n}"
        if not src.exists():
            takes(src, n)
        shutil.rmtree(dst, ignore_errors=True)
        first, _, _ = timed([*VOICEPREP, "run", str(src), "--out", str(dst), "-q", "--report", str(tmp / "r.jsonl")])
        reruns = [timed([*VOICEPREP, "run", str(src), "--out", str(dst), "-q", "--report", str(tmp / "r.jsonl")])[0]
                  for _ in range(3)]
        lines = (tmp / "r.jsonl").read_text().splitlines()
        skipped = sum(json.loads(line)["skipped"] for line in lines)
        out[f"run_{n}_first_s"] = round(first, 2)
        out[f"run_{n}_rerun_median_s"] = round(statistics.median(reruns), 3)
        out[f"run_{n}_rerun_share"] = round(statistics.median(reruns) / first, 4)
        out[f"run_{n}_report_lines"] = len(lines)
        out[f"run_{n}_report_skipped"] = skipped
    return out


def bench_interrupt(tmp: Path) -> dict[str, float]:
    src, dst = tmp / "takes150", tmp / "out150"
    if not src.exists():
        takes(src, 150, seed=1)
    results = []
    for _ in range(3):
        shutil.rmtree(dst, ignore_errors=True)
        proc = subprocess.Popen([*VOICEPREP, "run", str(src), "--out", str(dst), "-q", "--report", str(tmp / "i.jsonl")],
                                cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(4.0)
        t = time.perf_counter()
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=120)
        stop_s = time.perf_counter() - t
        partial = len(list(dst.rglob("*.part")))
        lines = (tmp / "i.jsonl").read_text().splitlines()
        results.append((stop_s, code, partial, len(lines), len({json.loads(x)["input"] for x in lines})))
    return {
        "interrupt_exit_s_max": round(max(r[0] for r in results), 3),
        "interrupt_exit_codes": sorted({r[1] for r in results}),  # type: ignore[dict-item]
        "interrupt_partial_files": sum(r[2] for r in results),
        "interrupt_report_duplicates": sum(r[3] - r[4] for r in results),
    }


def bench_memory(tmp: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for n in (1000, 10000, 100000):
        src = tmp / f"tiny{n}"
        if not src.exists():
            src.mkdir()
            for k in range(n):
                (src / f"f{k:06d}.wav").write_bytes(b"")
        dst = tmp / f"tout{n}"
        shutil.rmtree(dst, ignore_errors=True)
        wall, rss, _ = timed([*VOICEPREP, "run", str(src), "--out", str(dst), "-q", "--report", str(tmp / "m.jsonl")])
        out[f"memory_{n}_inputs_peak_rss_mb"] = round(rss / 1024, 1)
        out[f"memory_{n}_inputs_wall_s"] = round(wall, 1)
    return out


def bench_jobs(tmp: Path) -> dict[str, float]:
    """--jobs 2 against --jobs 1, alternated, over the speed benchmark's folder (seven recordings of
    10 s to 10 min, 28.7 min in all, the two largest half the work) and over 49 takes of 20-26 s."""
    mixed, takes49 = tmp / "mixed", tmp / "takes49"
    if not mixed.exists():
        build_mixed(mixed)
    if not takes49.exists():
        takes(takes49, 49)
    out: dict[str, float] = {"rounds": ROUNDS}
    for name, src in (("mixed", mixed), ("takes49", takes49)):
        walls: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(ROUNDS):  # alternated, so both see the same state of the machine
            for jobs in (1, 2):
                dst = tmp / f"jobs{jobs}"
                shutil.rmtree(dst, ignore_errors=True)
                walls[jobs].append(timed([*VOICEPREP, "run", str(src), "--out", str(dst), "-q", "--jobs", str(jobs)])[0])
        one, two = statistics.median(walls[1]), statistics.median(walls[2])
        out.update({
            f"{name}_jobs1_wall_s": round(one, 2),
            f"{name}_jobs2_wall_s": round(two, 2),
            f"{name}_jobs2_speedup": round(one / two, 2),
            f"{name}_jobs2_speedup_paired_median": round(statistics.median(a / b for a, b in zip(walls[1], walls[2])), 2),
        })
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["all", "rerun", "interrupt", "memory", "jobs"])
    ap.add_argument("--keep", metavar="DIR", help="build inputs here and keep them (default: a temporary folder)")
    args = ap.parse_args()
    results: dict[str, object] = {"cores": os.cpu_count(), "load": os.getloadavg()[0]}
    with scratch(args.keep, "voiceprep-batch-") as tmp:
        for name, fn in (("rerun", bench_rerun), ("interrupt", bench_interrupt), ("memory", bench_memory),
                         ("jobs", bench_jobs)):
            if args.what in ("all", name):
                results.update(fn(tmp))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
