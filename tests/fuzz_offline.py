"""The offline fuzz run: thousands of mutated files, each judged in a worker process under a watchdog.

Each file goes through the library's ``check`` and through the `run` path
(``runner.process_file`` with ``config.load()``) in a worker process; a file that takes longer
than ``--timeout`` counts as a hang (the worker is killed and replaced). Run from the repository:

    .venv/bin/python tests/fuzz_offline.py --count 2400 --seed 16 --headers --jobs 2 --out /tmp/fuzz

It prints the tracebacks, hangs, worker crashes and files without a service code (exit 1 if
any), the verdicts by code and the slowest files; ``results.jsonl`` in ``--out`` has every
record. ``--only INDEX`` writes and judges one variant.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fuzzing import bad_headers, seeds, variant  # tests/ is on sys.path when this file is run


def _worker(modes: list[str], out_dir: Path) -> None:
    """Judge each path read from stdin; one JSON line per file on stdout."""
    import traceback

    from pipeline.api import check
    from pipeline.config import load
    from pipeline.runner import Job, process_file

    check_cfg = load(chains=("check",))
    run_cfg = load() if "run" in modes else None
    for line in sys.stdin:
        path = json.loads(line)["path"]
        rec: dict[str, object] = {"path": path}
        for mode in modes:
            t0 = time.perf_counter()
            try:
                if mode == "check":
                    v = check(path, check_cfg)
                    res = {"ok": v.ok, "code": v.code, "message": v.message}
                else:
                    out = out_dir / f"{Path(path).name}.out.wav"
                    r = process_file(Job(path, str(out)), run_cfg)  # type: ignore[arg-type]
                    out.unlink(missing_ok=True)
                    res = {"ok": r.ok, "code": r.code, "message": r.message}
            except BaseException:  # noqa: BLE001 - every escape is what this run counts
                res = {"traceback": traceback.format_exc()}
            res["s"] = round(time.perf_counter() - t0, 3)
            rec[mode] = res
        sys.stdout.write(json.dumps(rec) + "\n")
        sys.stdout.flush()


class _Worker:
    """A worker process; ``judge`` returns its record, or None when it took longer than ``timeout_s``."""

    def __init__(self, modes: list[str], out_dir: Path, log: Path) -> None:
        import subprocess

        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", ",".join(modes), "--out", str(out_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("ab"), text=True,
        )

    def judge(self, path: Path, timeout_s: float) -> dict[str, object] | None:
        import select

        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"path": str(path)}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not ready:
            self.proc.kill()
            self.proc.wait()
            return None
        line = self.proc.stdout.readline()
        if not line:  # the worker died (a crash in native code)
            self.proc.wait()
            return {"path": str(path), "crash": self.proc.returncode}
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait()


def run_offline(args: argparse.Namespace) -> int:
    import threading

    from pipeline.errors import SERVICE_CODES

    out = Path(args.out)
    files_dir, seeds_dir, work = out / "files", out / "seeds", out / "work"
    for d in (files_dir, seeds_dir, work):
        d.mkdir(parents=True, exist_ok=True)
    all_seeds = seeds(seeds_dir / f"{args.length:g}s", args.length)
    paths: list[Path] = []
    indices = [args.only] if args.only is not None else range(args.count)
    for i in indices:
        name, data = variant(all_seeds, args.seed, i)
        (files_dir / name).write_bytes(data)
        paths.append(files_dir / name)
    if args.headers:
        for name, data, _ in bad_headers(all_seeds, seeds_dir):
            (files_dir / f"hdr_{name}").write_bytes(data)
            paths.append(files_dir / f"hdr_{name}")
    modes = args.modes.split(",")
    todo = list(reversed(paths))
    records: list[dict[str, object]] = []
    lock = threading.Lock()
    started = time.perf_counter()

    def loop(k: int) -> None:
        worker = _Worker(modes, work, out / f"worker{k}.log")
        while True:
            with lock:
                if not todo:
                    break
                path = todo.pop()
            t0 = time.perf_counter()
            rec = worker.judge(path, args.timeout)
            if rec is None:
                rec = {"path": str(path), "hang": round(time.perf_counter() - t0, 1)}
            if "hang" in rec or "crash" in rec:
                worker = _Worker(modes, work, out / f"worker{k}.log")
            with lock:
                records.append(rec)
                if len(records) % 100 == 0:
                    print(f"{len(records)}/{len(paths)} in {time.perf_counter() - started:.0f} s", flush=True)
        worker.close()

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(args.jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with (out / "results.jsonl").open("w") as fh:
        for rec in sorted(records, key=lambda r: str(r["path"])):
            fh.write(json.dumps(rec) + "\n")
    return _summary(records, modes, set(SERVICE_CODES), time.perf_counter() - started)


def _summary(records: list[dict[str, object]], modes: list[str], codes: set[str], wall_s: float) -> int:
    hangs = [r for r in records if "hang" in r]
    crashes = [r for r in records if "crash" in r]
    print(f"files: {len(records)}, wall {wall_s:.0f} s; hangs: {len(hangs)}; worker crashes: {len(crashes)}")
    bad = len(hangs) + len(crashes)
    for mode in modes:
        done = [r[mode] for r in records if isinstance(r.get(mode), dict)]
        tracebacks = [d for d in done if "traceback" in d]
        no_code = [d for d in done if "traceback" not in d and not d["ok"] and d["code"] not in codes]
        tally: dict[str, int] = {}
        for d in done:
            key = "traceback" if "traceback" in d else ("ok" if d["ok"] else str(d["code"]))
            tally[key] = tally.get(key, 0) + 1
        slow = sorted(((float(d["s"]), str(r["path"])) for r in records if isinstance(d := r.get(mode), dict)),
                      reverse=True)[:3]
        print(f"{mode}: tracebacks {len(tracebacks)}, without a service code {len(no_code)}; {tally}")
        print(f"{mode}: slowest " + ", ".join(f"{s:.2f} s {Path(p).name}" for s, p in slow))
        bad += len(tracebacks) + len(no_code)
    for r in hangs + crashes:
        print(f"  {r}")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000, help="mutated files")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--length", type=float, default=14.0, help="seconds of speech in the mono seeds")
    ap.add_argument("--only", type=int, default=None, metavar="INDEX", help="just this variant")
    ap.add_argument("--headers", action="store_true", help="also the hand-made bad headers")
    ap.add_argument("--modes", default="check,run", help="check, run or both (comma-separated)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds before a file counts as a hang")
    ap.add_argument("--out", default="/tmp/voiceprep-fuzz")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        _worker(args.worker.split(","), Path(args.out))
        return 0
    return run_offline(args)


if __name__ == "__main__":
    sys.exit(main())
