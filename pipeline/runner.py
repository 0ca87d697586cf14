"""Run the `run` chain over a batch of inputs: plan the outputs, process in workers, report, write.

Only the runner reads and writes files. Per input: probe, scout if long (the chain up to its
`Scouting` stage on a few stretches), decode, the chain's worker part, then in the coordinating
process its `Session` stages (enrollment), then the writer. One bad file never stops the batch.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .api import expand
from .audio_io import decode, probe
from .clip import Clip, SpeechMap
from .config import Config
from .errors import PipelineError
from .pipeline import Pipeline
from .report import FileResult, summary, write_line
from .scout import LONG_INPUT_S, best_region
from .writer import write_atomic


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


@dataclass(frozen=True)
class Worked:
    """What a worker hands back: the final result, or (when the chain ends in `Session` stages)
    the clip for the coordinating process to finish."""

    result: FileResult
    clip: Clip | None = None
    input_s: float = 0.0


def _decoded(job: Job, chain: Pipeline) -> tuple[Clip, float]:
    """The input as the chain starts from, and the input's duration: a long input is scouted and
    only the region around its best cut is decoded, carrying the speech found there."""
    info = probe(job.input)
    scouting = chain.scouting() if info.duration_s > LONG_INPUT_S else None
    region = best_region(info, *scouting) if scouting is not None else None
    if region is None:
        return decode(info), info.duration_s
    clip = decode(info, start_s=region.start_s, end_s=region.end_s)
    found = region.speech - region.start_s
    return clip.replace(speech=SpeechMap(segments=found, runs=found, duration_s=clip.duration_s)), info.duration_s


def work(job: Job, chain: Pipeline, *, finish_here: bool) -> Worked:
    """Take one input through ``chain`` (the worker part of the `run` chain); with ``finish_here``
    also write the output. Never raises for a bad file."""
    try:
        clip, input_s = _decoded(job, chain)
        clip = chain(clip)
        if not finish_here:
            return Worked(_result_ok(job, clip, input_s), clip, input_s)
        return Worked(_written(job, clip, input_s))
    except PipelineError as exc:
        return Worked(_rejected(job, exc))
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop the batch
        return Worked(_unexpected(job, exc))


def finish(worked: Worked, tail: Callable[[Clip], Clip]) -> FileResult:
    """Run the chain's `Session` stages on a worker's clip, then write it (coordinating process)."""
    if worked.clip is None:
        return worked.result
    job = Job(worked.result.input, worked.result.output or "")
    try:
        return _written(job, tail(worked.clip), worked.input_s)
    except PipelineError as exc:
        return _rejected(job, exc)
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop the batch
        return _unexpected(job, exc)


def process_file(job: Job, config: Config) -> FileResult:
    """Take one input through the whole `run` chain and write its output; never raises for a bad file."""
    worker, sessions = config.run.split_sessions()
    if not len(sessions):
        return work(job, worker, finish_here=True).result
    with sessions.open() as tail:
        return finish(work(job, worker, finish_here=False), tail)


def _written(job: Job, clip: Clip, input_s: float) -> FileResult:
    if clip.encoded is None:  # the chain is checked to encode: only a library-built chain gets here
        raise ValueError("the chain made no WAV (no `encode` stage)")
    write_atomic(job.output, clip.encoded)
    return _result_ok(job, clip, input_s)


def _result_ok(job: Job, clip: Clip, input_duration_s: float) -> FileResult:
    metrics = dict(clip.metrics)
    metrics.pop("segments", None)
    metrics["input_duration_s"] = round(input_duration_s, 3)
    metrics.setdefault("sample_rate", clip.sample_rate)
    return FileResult(
        input=job.input,
        status="ok",
        output=job.output,
        warnings=[w.as_dict() for w in clip.warnings],
        segment=clip.cut.as_dict() if clip.cut is not None else None,
        metrics=metrics,
    )


def _rejected(job: Job, exc: PipelineError) -> FileResult:
    return FileResult(
        input=job.input,
        status="rejected",
        code=exc.code,
        message=exc.message,
        hint=exc.hint,
        stage=exc.stage,
        metrics=exc.metrics,
    )


def _unexpected(job: Job, exc: Exception) -> FileResult:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    return _crashed(job, f"{type(exc).__name__}: {exc}{where}")


def _crashed(job: Job, message: str) -> FileResult:
    return FileResult(
        input=job.input,
        status="rejected",
        code="voiceprep.UnexpectedError",
        message=message,
        hint="this is a voiceprep bug; please report it with the file",
    )


def run_jobs(
    planned: list[Job],
    config: Config,
    *,
    jobs: int | None = None,
    report: Path | None = None,
    progress: bool = False,
    on_result: Callable[[FileResult], None] | None = None,
) -> list[FileResult]:
    """Process every planned input; results in input order. The report is appended line by line as files finish."""
    worker, sessions = config.run.split_sessions()
    n_jobs = max(1, min(jobs or os.cpu_count() or 1, len(planned) or 1))
    results: dict[int, FileResult] = {}
    if report is not None:
        Path(report).parent.mkdir(parents=True, exist_ok=True)
    fh = open(report, "a", encoding="utf-8") if report is not None else None  # noqa: SIM115
    bar = _Progress(len(planned)) if progress else None
    try:
        with sessions.open() as tail:
            finish_here = not len(sessions)
            done: Iterator[tuple[int, Worked]]
            if n_jobs == 1:
                done = ((i, work(job, worker, finish_here=finish_here)) for i, job in enumerate(planned))
            else:
                done = _pool(planned, worker, n_jobs, finish_here)
            for i, worked in done:
                res = finish(worked, tail)
                results[i] = res
                if fh is not None:
                    write_line(fh, res)
                if on_result is not None:
                    on_result(res)
                if bar is not None:
                    bar.advance()
    finally:
        if fh is not None:
            fh.close()
        if bar is not None:
            bar.close()
    return [results[i] for i in range(len(planned))]


def run_paths(
    paths: list[str],
    out_dir: str | Path,
    config: Config,
    **kwargs: object,
) -> list[FileResult]:
    """``run_jobs`` over the inputs found in ``paths``, outputs mirrored under ``out_dir``."""
    return run_jobs(plan(paths, out_dir), config, **kwargs)  # type: ignore[arg-type]


def _pool(planned: list[Job], chain: Pipeline, n_jobs: int, finish_here: bool) -> Iterator[tuple[int, Worked]]:
    """Worked inputs as the worker processes finish them (any order)."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    pending = set(range(len(planned)))
    try:
        with ProcessPoolExecutor(max_workers=n_jobs) as pool:
            futures = {pool.submit(work, planned[i], chain, finish_here=finish_here): i for i in sorted(pending)}
            remaining = set(futures)
            while remaining:
                finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                for fut in finished:
                    i = futures[fut]
                    try:
                        worked = fut.result()
                    except BrokenProcessPool:
                        raise
                    except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
                        worked = Worked(_crashed(planned[i], f"{type(exc).__name__}: {exc}"))
                    pending.discard(i)
                    yield i, worked
    except BrokenProcessPool:
        # A worker died (native crash, out of memory). Finished files are kept; the rest run one
        # by one, each in a fresh process, so only the file that kills its worker is lost.
        for i in sorted(pending):
            with ProcessPoolExecutor(max_workers=1) as solo:
                try:
                    worked = solo.submit(work, planned[i], chain, finish_here=finish_here).result()
                except BrokenProcessPool:
                    worked = Worked(_crashed(planned[i], "the worker process died on this file"))
            yield i, worked


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

    def advance(self) -> None:
        self._p.advance(self._task)

    def close(self) -> None:
        self._p.stop()


__all__ = ["FileResult", "Job", "finish", "plan", "process_file", "run_jobs", "run_paths", "summary", "work"]
