"""Run the `run` chain over files and folders: workers, long inputs scouted, atomic outputs.

Only the runner reads and writes files. A long input is first scouted in blocks (a cheap
activity measure per second, then the chain up to the `window` stage on the best-ranked
stretches only), so memory stays flat in input length; then only the chosen region is decoded
at full rate and taken through the whole chain.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .api import expand
from .audio_io import decode, iter_blocks, probe, write_wav_atomic
from .clip import Clip
from .config import Config
from .errors import PipelineError
from .report import FileResult, summary, write_line

BLOCK_S = 120.0  # inputs longer than this are scouted first (seconds)
REGION_PAD_S = 1.0  # decoded around the chosen window (seconds)
SCOUT_RATE = 16000
SCOUT_WINDOW_S = 20.0  # stretches ranked by coarse activity
SCOUT_MARGIN_S = 5.0  # each ranked stretch is examined with this much context on both sides
SCOUT_MIN_REGIONS = 2  # examine at least this many stretches ...
SCOUT_MAX_REGIONS = 12  # ... and at most this many
QUALIFIED = 1000.0  # window scores at or above this meet every rule (see stages/window.py)


@dataclass(frozen=True)
class Job:
    input: str
    output: str


def plan(paths: Iterable[str], out_dir: str | Path) -> list[Job]:
    """Map inputs to outputs under ``out_dir``, mirroring folder trees, as ``.wav``.

    Two inputs that would land on the same output (``a.mp3`` and ``a.m4a``) keep their
    extension in the name (``a.mp3.wav``).
    """
    out_root = Path(out_dir)
    pairs: list[tuple[Path, Path]] = []
    for raw in paths:
        root = Path(raw)
        for f in expand([raw]):
            rel = f.relative_to(root) if root.is_dir() else Path(f.name)
            pairs.append((f, rel))
    counts: dict[Path, int] = {}
    for _, rel in pairs:
        key = rel.with_suffix(".wav")
        counts[key] = counts.get(key, 0) + 1
    jobs = []
    for f, rel in pairs:
        key = rel.with_suffix(".wav")
        target = key if counts[key] == 1 else rel.with_name(rel.name + ".wav")
        jobs.append(Job(str(f), str(out_root / target)))
    return jobs


ACTIVITY_RATE = 8000  # webrtcvad ranks stretches as well at 8 kHz, at half the cost


def _activity(info: Any) -> np.ndarray:
    """Coarse speech activity per 0.9 s unit of a long input (fraction 0-1), decoded in blocks.

    Each block is decoded at its own rate; only its louder channel (the voiced side, if one-sided)
    is brought to 8 kHz, at soxr's quick quality (ranking needs no more), per block.
    """
    import soxr

    from .speech import coarse_activity

    per_s: list[np.ndarray] = []
    carry = np.zeros(0, np.float32)
    unit = 30 * (3 * ACTIVITY_RATE // 100)  # 30 frames of 30 ms
    for block in iter_blocks(info):
        # every 4th sample is plenty to tell which side is louder
        loudest = int(np.argmax([float(np.dot(r[::4], r[::4])) for r in block])) if block.shape[0] > 1 else 0
        x = block[loudest]
        if info.sample_rate != ACTIVITY_RATE:
            x = soxr.resample(x, info.sample_rate, ACTIVITY_RATE, quality="QQ")
        x = np.concatenate([carry, np.asarray(x, dtype=np.float32)])
        whole = len(x) // unit * unit  # whole 0.9 s units
        carry = x[whole:]
        if whole == 0:
            continue
        act = coarse_activity(x[:whole], rate=ACTIVITY_RATE)
        per_s.append(act.reshape(-1, 30).mean(axis=1))
    return np.concatenate(per_s) if per_s else np.zeros(0)


def _best_region(info: Any, chain: Any) -> tuple[float, float, list[list[float]]] | None:
    """Scout a long input with flat memory: rank 20 s stretches by coarse activity, then run the
    chain up to `window` (Silero decides) on the best-ranked stretches only, at 16 kHz.

    Returns the region (seconds) around the best window found and the speech segments (input
    time) the window stage detected around it, or None.
    """
    upto = chain.until("window")
    rate = SCOUT_RATE if info.sample_rate > SCOUT_RATE else None  # scouting needs no more than the VAD's rate
    act = _activity(info)
    unit = 0.9  # seconds per activity value
    span = int(round(SCOUT_WINDOW_S / unit))
    if len(act) < span:
        return None
    density = np.convolve(act, np.ones(span), mode="valid")  # speech seconds in each 20 s stretch
    order = np.argsort(-density, kind="stable")
    taken: list[int] = []
    best: tuple[float, float, float, list[list[float]]] | None = None
    for start in order:
        if len(taken) >= SCOUT_MAX_REGIONS or density[start] * unit < 5.0:
            break
        if any(abs(int(start) - t) < span for t in taken):
            continue
        taken.append(int(start))
        lo = max(float(start) * unit - SCOUT_MARGIN_S, 0.0)
        hi = min(float(start) * unit + SCOUT_WINDOW_S + SCOUT_MARGIN_S, info.duration_s)
        try:
            clip = upto(decode(info, rate=rate, start_s=lo, end_s=hi))
        except PipelineError:
            continue
        seg = clip.info.get("segment")
        if seg is None:
            continue
        score = float(clip.info.get("window_score", 0.0))
        if best is None or score > best[0]:
            best = (score, seg["start_s"], seg["end_s"], list(clip.info.get("input_speech_segments", [])))
        if best[0] >= QUALIFIED and len(taken) >= SCOUT_MIN_REGIONS:
            break
    if best is None:
        return None
    lo, hi = max(best[1] - REGION_PAD_S, 0.0), min(best[2] + REGION_PAD_S, info.duration_s)
    return lo, hi, [s for s in best[3] if s[1] > lo and s[0] < hi]


def process_file(job: Job, config: Config) -> FileResult:
    """Take one input through the `run` chain and write its output; never raises for a bad file."""
    try:
        chain = config.run
        if "enroll" in chain.names():
            _bind_enroll(config)
        info = probe(job.input)
        long_input = info.duration_s > BLOCK_S and "window" in chain.names()
        region = _best_region(info, chain) if long_input else None
        if region is not None:
            # Speech in the region was detected while scouting (same stage, same settings, at
            # 16 kHz): the window stage takes it from there instead of detecting it again.
            clip = decode(info, start_s=region[0], end_s=region[1]).with_info(speech_hint=region[2])
        else:
            clip = decode(info)
        clip = chain(clip)
        write_wav_atomic(job.output, clip.samples, clip.sample_rate)
        return _result_ok(job, clip, info.duration_s)
    except PipelineError as exc:
        return FileResult(
            input=job.input,
            status="rejected",
            code=exc.code,
            message=exc.message,
            hint=exc.hint,
            stage=exc.stage,
            metrics=exc.metrics,
        )
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop the batch
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
        return FileResult(
            input=job.input,
            status="rejected",
            code="voiceprep.UnexpectedError",
            message=f"{type(exc).__name__}: {exc}{where}",
            hint="this is a voiceprep bug; please report it with the file",
        )


def _bind_enroll(config: Config) -> None:
    """The `enroll` stage of this config uses this config's `enroll:` section (in every worker)."""
    from .service.enroll import bind_settings
    from .service.settings import EnrollSettings

    bind_settings(EnrollSettings.from_mapping(config.enroll))


def _result_ok(job: Job, clip: Clip, input_duration_s: float) -> FileResult:
    metrics = dict(clip.info.get("metrics", {}))
    metrics.pop("segments", None)
    metrics["input_duration_s"] = round(input_duration_s, 3)
    metrics.setdefault("sample_rate", clip.sample_rate)
    return FileResult(
        input=job.input,
        status="ok",
        output=job.output,
        warnings=[w.as_dict() for w in clip.warnings],
        segment=clip.info.get("segment"),
        metrics=metrics,
    )


def run_paths(
    paths: list[str],
    out_dir: str | Path,
    config: Config,
    *,
    jobs: int | None = None,
    report: Path | None = None,
    progress: bool = False,
    on_result: Callable[[FileResult], None] | None = None,
) -> list[FileResult]:
    """Process every input; results in input order. The report is appended line by line as files finish."""
    if "enroll" in config.run.names():
        _bind_enroll(config)  # a bad `enroll:` section fails here (ConfigError), before any file
    planned = plan(paths, out_dir)
    n_jobs = max(1, min(jobs or os.cpu_count() or 1, len(planned) or 1))
    results: dict[int, FileResult] = {}
    if report is not None:
        Path(report).parent.mkdir(parents=True, exist_ok=True)
    fh = open(report, "a", encoding="utf-8") if report is not None else None  # noqa: SIM115
    bar = _Progress(len(planned)) if progress else None

    def done(i: int, res: FileResult) -> None:
        results[i] = res
        if fh is not None:
            write_line(fh, res)
        if on_result is not None:
            on_result(res)
        if bar is not None:
            bar.advance(res)

    try:
        if n_jobs == 1:
            for i, job in enumerate(planned):
                done(i, process_file(job, config))
        else:
            _run_pool(planned, config, n_jobs, done)
    finally:
        if fh is not None:
            fh.close()
        if bar is not None:
            bar.close()
    return [results[i] for i in range(len(planned))]


def _run_pool(planned: list[Job], config: Config, n_jobs: int, done: Callable[[int, FileResult], None]) -> None:
    # imported here: `--jobs 1` needs no worker processes (multiprocessing costs ~20 ms to import)
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    pending = set(range(len(planned)))
    try:
        with ProcessPoolExecutor(max_workers=n_jobs) as pool:
            futures = {pool.submit(process_file, planned[i], config): i for i in sorted(pending)}
            remaining = set(futures)
            while remaining:
                finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                for fut in finished:
                    i = futures[fut]
                    try:
                        res = fut.result()
                    except BrokenProcessPool:
                        raise
                    except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
                        res = _crashed(planned[i], f"{type(exc).__name__}: {exc}")
                    pending.discard(i)
                    done(i, res)
    except BrokenProcessPool:
        # A worker died (native crash, out of memory). Finished files are kept; the rest run one
        # by one, each in a fresh process, so only the file that kills its worker is lost.
        for i in sorted(pending):
            with ProcessPoolExecutor(max_workers=1) as solo:
                try:
                    res = solo.submit(process_file, planned[i], config).result()
                except BrokenProcessPool:
                    res = _crashed(planned[i], "the worker process died on this file")
            done(i, res)


def _crashed(job: Job, message: str) -> FileResult:
    return FileResult(
        input=job.input,
        status="rejected",
        code="voiceprep.UnexpectedError",
        message=message,
        hint="this is a voiceprep bug; please report it with the file",
    )


class _Progress:
    """A rich progress bar on stderr (only when it is a terminal)."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._p = Progress(
            TextColumn("voiceprep run"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
            transient=True,
        )
        self._task = self._p.add_task("run", total=total)
        self._p.start()

    def advance(self, _res: FileResult) -> None:
        self._p.advance(self._task)

    def close(self) -> None:
        self._p.stop()


__all__ = ["FileResult", "Job", "plan", "process_file", "run_paths", "summary"]
