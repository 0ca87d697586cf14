"""Run the `run` chain over a batch: skip what is unchanged, process the rest in workers, report, write.

Only the runner reads and writes files (through pipeline/storage.py: local paths or fsspec
URLs, an input behind a URL fetched to a local temporary copy first). Per input: probe, scout if long (the chain up to its
`Scouting` stage on a few stretches), decode, the chain's worker part, then in the coordinating
process its `Session` stages (enrollment), then the writer. Nothing is held per input beyond
what is in flight: plans, results and reports stream. One bad file never stops the batch.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import os
import stat
import sys
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

from . import storage
from .audio_io import decode, decoder_error, probe
from .clip import Clip, SpeechMap
from .config import Config
from .errors import ConfigError, PipelineError
from .executors import Executor, LocalPool, Serial
from .manifest import Fingerprint, Manifest, Orphan, chain_key
from .pipeline import Pipeline
from .plan import Job, plan
from .report import FileResult, Summary, summary, write_line
from .report_page.envelope import EnvelopeBuilder, envelope
from .scout import LONG_INPUT_S, best_region

LOOKAHEAD = 4096  # planned inputs read ahead of the workers (for the progress bar's total)


@dataclass(frozen=True)
class Worked:
    """What a worker hands back: the final result, or (when the chain ends in `Session` stages)
    the clip for the coordinating process to finish; the input's duration, its fingerprint, and
    what the report page draws of the input."""

    result: FileResult
    clip: Clip | None = None
    fingerprint: Fingerprint | None = None
    seen: Seen | None = None


@dataclass(frozen=True)
class Seen:
    """The input as the report page draws it: its duration, its coarse waveform (peaks 0-255), and
    the stretch analysed in detail when a long input was scouted (None: all of it)."""

    input_s: float
    envelope: list[int]
    span: tuple[float, float] | None = None


def _decoded(path: str, chain: Pipeline) -> tuple[Clip, Seen]:
    """The input (the local file ``path``) as the chain starts from, and how it looked: a long
    input is scouted and only the region around its best cut is decoded, carrying the speech
    found there."""
    info = probe(path)
    scouting = chain.scouting() if info.duration_s > LONG_INPUT_S else None
    if scouting is not None:
        env = EnvelopeBuilder(int(info.duration_s * info.sample_rate))
        region = best_region(info, *scouting, envelope=env)
        if region is not None:
            clip = decode(info, start_s=region.start_s, end_s=region.end_s)
            found = region.speech - region.start_s
            clip = clip.replace(speech=SpeechMap(segments=found, runs=found, duration_s=clip.duration_s))
            return clip, Seen(info.duration_s, env.values(), (region.start_s, region.end_s))
    clip = decode(info)
    return clip, Seen(clip.duration_s, envelope(clip.samples))


def plot(seen: Seen | None, clip: Clip | None = None, refused: SpeechMap | None = None) -> dict[str, Any] | None:
    """The report line's ``plot``: the input (waveform, speech, the analysed stretch), the cut and
    the produced clip (waveform, speech) when there is one."""
    if seen is None:
        return None
    cut = clip.cut if clip is not None else None
    speech = cut.input_speech if cut is not None else refused
    out: dict[str, Any] = {
        "input_s": round(seen.input_s, 3),
        "input_env": seen.envelope,
        "speech": speech.segments.round(3).tolist() if speech is not None else [],
        "speech_span": list(seen.span) if seen.span is not None else None,
        "window": [cut.start_s, cut.end_s] if cut is not None else None,
        "pieces": [list(p) for p in cut.pieces] if cut is not None else [],
        "output_s": None,
        "output_env": None,
        "output_speech": [],
    }
    if clip is not None and cut is not None:
        out["output_s"] = round(clip.duration_s, 3)
        out["output_env"] = envelope(clip.samples[0])
        out["output_speech"] = clip.speech.segments.round(3).tolist() if clip.speech is not None else []
    return out


def _fingerprint(path: str, local: str) -> Fingerprint | None:
    """The input's fingerprint, or None for anything but a readable regular file (a FIFO is
    never opened: the probe refuses it). ``local`` holds the content of a URL's input."""
    try:
        if local != path:
            return Fingerprint.of(path, local)
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        return Fingerprint.of(path)
    except OSError:
        return None


def work(job: Job, chain: Pipeline, *, finish_here: bool) -> Worked:
    """Take one input through ``chain`` (the worker part of the `run` chain); with ``finish_here``
    also write the output. An input behind a URL is decoded from a local temporary copy. Never
    raises for a bad file."""
    storage.discard_temp(job.output)  # what a killed run may have left
    try:
        with storage.local_copy(job.input) as local:
            return _work_on(job, local, chain, finish_here)
    except OSError as exc:  # a URL's object that cannot be fetched (a local path is read below)
        reason = exc.strerror or (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        return Worked(_rejected(job, decoder_error(job.input, f"cannot open: {reason}", "check the URL and your access to it")))
    except ConfigError as exc:  # this worker lacks fsspec or the URL's protocol package
        return Worked(FileResult(input=job.input, status="rejected", code="voiceprep.ConfigError", message=exc.message,
                                 hint="install voiceprep with the same extras wherever workers run"))


def _work_on(job: Job, local: str, chain: Pipeline, finish_here: bool) -> Worked:
    """``work`` on the local file ``local`` holding ``job.input``'s content."""
    fingerprint = _fingerprint(job.input, local)
    seen: Seen | None = None
    try:
        clip, seen = _decoded(local, chain)
        if local != job.input:  # the clip names its input, not the temporary copy
            clip = clip.replace(source=dataclasses.replace(clip.source, path=job.input))
        clip = chain(clip)
        if not finish_here:
            return Worked(_result_ok(job, clip, seen), clip, fingerprint, seen)
        return Worked(_written(job, clip, seen), None, fingerprint, seen)
    except PipelineError as exc:
        return Worked(_rejected(job, exc, seen), None, fingerprint, seen)
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop the batch
        return Worked(_unexpected(job, exc), None, fingerprint, seen)


def finish(worked: Worked, job: Job, tail: Callable[[Clip], Clip]) -> FileResult:
    """Run the chain's `Session` stages on a worker's clip, then write it (coordinating process)."""
    if worked.clip is None:
        return worked.result
    try:
        return _written(job, tail(worked.clip), worked.seen)
    except PipelineError as exc:
        return _rejected(job, exc, worked.seen)
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop the batch
        return _unexpected(job, exc)


def process_file(job: Job, config: Config) -> FileResult:
    """Take one input through the whole `run` chain and write its output; never raises for a bad file."""
    worker, sessions = config.run.split_sessions()
    if not len(sessions):
        return work(job, worker, finish_here=True).result
    with sessions.open() as tail:
        return finish(work(job, worker, finish_here=False), job, tail)


def _written(job: Job, clip: Clip, seen: Seen | None) -> FileResult:
    if clip.encoded is None:  # the chain is checked to encode: only a library-built chain gets here
        raise ValueError("the chain made no WAV (no `encode` stage)")
    storage.write(job.output, clip.encoded)
    return _result_ok(job, clip, seen)


def _result_ok(job: Job, clip: Clip, seen: Seen | None) -> FileResult:
    metrics = dict(clip.metrics)
    metrics.pop("segments", None)
    if seen is not None:
        metrics["input_duration_s"] = round(seen.input_s, 3)
    metrics.setdefault("sample_rate", clip.sample_rate)
    return FileResult(
        input=job.input,
        status="ok",
        output=job.output,
        warnings=[w.as_dict() for w in clip.warnings],
        segment=clip.cut.as_dict() if clip.cut is not None else None,
        metrics=metrics,
        plot=plot(seen, clip),
    )


def _rejected(job: Job, exc: PipelineError, seen: Seen | None = None) -> FileResult:
    metrics = dict(exc.metrics)
    if seen is not None:
        metrics.setdefault("input_duration_s", round(seen.input_s, 3))
    return FileResult(
        input=job.input,
        status="rejected",
        code=exc.code,
        message=exc.message,
        hint=exc.hint,
        stage=exc.stage,
        metrics=metrics,
        plot=plot(seen, refused=exc.speech if isinstance(exc.speech, SpeechMap) else None),
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


@dataclass
class Outcome:
    """What a batch did: its id, the counts, the outputs whose inputs are gone (removed with
    ``prune``), and whether Ctrl-C stopped it."""

    run_id: str
    summary: Summary = field(default_factory=Summary)
    orphans: list[Orphan] = field(default_factory=list)
    wall_s: float = 0.0
    interrupted: bool = False


def run_batch(
    planned: Iterable[Job],
    config: Config,
    out_dir: str | Path,
    *,
    jobs: int | None = None,
    executor: Executor | None = None,
    report: str | Path | None = None,
    force: bool = False,
    prune: bool = False,
    progress: bool = False,
    on_result: Callable[[FileResult], None] | None = None,
) -> Outcome:
    """Process every planned input, streaming: an input unchanged since its output in ``out_dir``
    was made (same content, chain, options and version) is reported with its earlier verdict
    unless ``force``; the rest run on ``executor`` (default: ``jobs`` worker processes, at most one
    per core by default; 1 runs in this process).
    ``report`` is rewritten with one line per input of this run, as each finishes. Ctrl-C stops
    within a moment: nothing new starts, running files are abandoned and leave nothing behind."""
    started = time.monotonic()
    outcome = Outcome(run_id=time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6])
    worker_chain, sessions = config.run.split_sessions()
    finish_here = not len(sessions)
    n = max(1, jobs if jobs is not None else (os.cpu_count() or 1))
    rest = iter(planned)
    ahead: deque[Job] = deque(itertools.islice(rest, LOOKAHEAD))
    if executor is None:
        executor = LocalPool(min(n, len(ahead) or 1)) if n > 1 and len(ahead) > 1 else Serial()
    bar = _Progress(len(ahead) if len(ahead) < LOOKAHEAD else None) if progress else None
    fh = _open_report(report)
    manifest = Manifest(os.fspath(out_dir), run_id=outcome.run_id, config=chain_key(config.run))
    handed: dict[int, Job] = {}  # handed to the executor, not yet back

    def emit(result: FileResult) -> None:
        result.run_id = outcome.run_id
        outcome.summary.add(result)
        if fh is not None:
            write_line(fh, result)
        if on_result is not None:
            on_result(result)
        if bar is not None:
            bar.advance()

    def tasks() -> Iterator[tuple[int, Job]]:
        for key, job in enumerate(_drain(ahead, rest, largest_first=not isinstance(executor, Serial))):
            earlier = None if force else manifest.unchanged(job.input, job.output)
            if earlier is not None:
                emit(earlier)
                continue
            handed[key] = job
            yield key, job

    def crashed(key: int, job: Job, why: str) -> Worked:
        return Worked(_crashed(job, why))

    try:
        with sessions.open() as tail:
            fn = partial(work, chain=worker_chain, finish_here=finish_here)
            for key, worked in executor.map(fn, tasks(), crashed):
                job = handed.pop(key)
                result = finish(worked, job, tail)
                if worked.fingerprint is not None:
                    manifest.record(result, job.output, worked.fingerprint)
                emit(result)
        outcome.orphans = list(manifest.orphans())
        if prune:
            for orphan in outcome.orphans:
                manifest.forget(orphan)
    except KeyboardInterrupt:
        outcome.interrupted = True
        executor.stop()
        for job in handed.values():
            storage.discard_temp(job.output)
    finally:
        manifest.close()
        if fh is not None:
            fh.close()
        if bar is not None:
            bar.close()
        outcome.wall_s = time.monotonic() - started
    return outcome


def _drain(ahead: deque[Job], rest: Iterator[Job], *, largest_first: bool) -> Iterator[Job]:
    """The jobs read ahead, then the rest of the plan, keeping ``ahead`` topped up. With
    ``largest_first`` (several workers) the largest local input read ahead goes next: a long
    recording started last would keep one worker busy while the others idle at the batch's end.
    Equal sizes and URL inputs keep the plan's order."""
    if not largest_first:
        while ahead:
            yield ahead.popleft()
            nxt = next(rest, None)
            if nxt is not None:
                ahead.append(nxt)
        return
    heap = [(-_size(job.input), n, job) for n, job in enumerate(ahead)]
    ahead.clear()
    heapq.heapify(heap)
    count = len(heap)
    while heap:
        yield heapq.heappop(heap)[2]
        nxt = next(rest, None)
        if nxt is not None:
            heapq.heappush(heap, (-_size(nxt.input), count, nxt))
            count += 1


def _size(path: str) -> int:
    if storage.is_url(path):
        return 0  # asking the store would cost a request per input
    try:
        return storage.stat(path)[0]
    except OSError:
        return 0


def _open_report(report: str | Path | None) -> IO[str] | None:
    if report is None:
        return None
    Path(report).parent.mkdir(parents=True, exist_ok=True)
    return open(report, "w", encoding="utf-8")


def run_paths(paths: list[str], out_dir: str | Path, config: Config, **kwargs: object) -> list[FileResult]:
    """``run_batch`` over the inputs found in ``paths`` (outputs mirrored under ``out_dir``), its
    results gathered in a list: a convenience for small batches and tests."""
    results: list[FileResult] = []
    run_batch(plan(paths, out_dir), config, out_dir, on_result=results.append, **kwargs)  # type: ignore[arg-type]
    return results


class _Progress:
    """A rich progress bar on stderr (only when it is a terminal); the total is unknown until the
    plan has been read to its end."""

    def __init__(self, total: int | None) -> None:
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


__all__ = ["FileResult", "Job", "Outcome", "finish", "plan", "process_file", "run_batch", "run_paths", "summary", "work"]
