"""Per-file work on a Dask cluster: the `--executor dask` executor, and bags and delayed tasks for library users."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any, TypeVar

from .config import Config
from .errors import ConfigError
from .plan import Job, plan
from .report import FileResult
from .runner import work

T = TypeVar("T")
R = TypeVar("R")

INSTALL_HINT = "pip install 'voiceprep[dask]'"
CONNECT_TIMEOUT_S = 10.0
# Tasks with the scheduler per worker thread. One: a second would wait on a worker behind a long
# file while another worker idles (Dask hands each one-thread worker up to two tasks at once).
WINDOW_PER_THREAD = 1
REFRESH_THREADS_S = 2.0  # how often the window follows workers that join or leave
RESUBMITS = 1  # a task the scheduler cancelled or lost (not failed) is sent once more
CLOSE_TIMEOUT_S = 5.0
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
HEAP_ARRAY_BYTES = 32 << 20  # the ceiling glibc's own sliding mmap threshold reaches
KEPT_FREE_BYTES = 128 << 20
GONE = frozenset({"closing", "closed"})  # a Client's status once it gave up reconnecting to its scheduler
SCHEDULER_GONE = "the Dask scheduler went away before this file was done"


def require() -> None:
    """Raise ConfigError (one line, with the install hint) when Dask's distributed scheduler is missing."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ConfigError(f"--executor dask needs Dask's distributed scheduler: {INSTALL_HINT}") from None


def dask_setup(worker: Any) -> None:
    """Preload of the workers of a cluster voiceprep starts itself: Ctrl-C is the coordinating
    process's to handle (it stops the batch and closes the cluster), and a worker dies with it."""
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@functools.lru_cache(maxsize=1)
def malloc_for_arrays() -> bool:
    """Undo, in a Dask worker, what its nanny's ``MALLOC_TRIM_THRESHOLD_=65536`` does to glibc:
    setting it freezes the mmap threshold at 128 KiB, so every array numpy frees goes back to the
    kernel and the next one faults its pages in again (docs/scale.md). Arrays up to 32 MiB come from the heap again and freed memory is kept up to
    128 MiB, as glibc does by itself. Once per process; True when changed."""
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, HEAP_ARRAY_BYTES)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, KEPT_FREE_BYTES))
    except (OSError, AttributeError):
        return False


def _on_worker(fn: Callable[[T], R], task: T) -> R:
    """A task as a Dask worker runs it: ``fn(task)`` with the allocator set for arrays."""
    malloc_for_arrays()
    return fn(task)


def worker_version() -> str:
    """voiceprep's version where this runs (asked of every worker when joining a cluster)."""
    from . import __version__

    return __version__


class DaskExecutor:
    """Runs tasks on a Dask cluster: the one at ``scheduler`` (``tcp://host:port``), a ``client``
    the caller made, or else a local cluster of ``workers`` processes with one thread each
    (started only when the first task arrives, closed with the batch).

    At most one task per worker thread is with the scheduler at once (so the plan streams, and
    no file waits behind a long one while a worker is free); they start in the order the runner
    hands them (largest first) and come back as they complete. A worker that dies while running a
    task: the scheduler runs the task again elsewhere, and after its
    ``allowed-failures`` it fails with KilledWorker, which becomes that task's ``crashed`` result,
    as does any other failure; a task the scheduler loses is resubmitted once. Nothing ends the
    batch early: when the scheduler itself is gone, every remaining task is ``crashed``."""

    def __init__(self, scheduler: str | None = None, workers: int | None = None, *, client: Any = None,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        require()
        if scheduler is not None and client is not None:
            raise ValueError("give a scheduler address or a client, not both")
        self.scheduler = scheduler
        self.workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
        self.connect_timeout_s = connect_timeout_s
        self._client: Any = client
        self._own_client = client is None
        self._cluster: Any = None
        self._token = uuid.uuid4().hex[:8]
        self._inflight: dict[str, tuple[int, Any, int, Any]] = {}  # future key -> (key, task, tries, future)
        self._threads = 0
        self._threads_at = 0.0
        if scheduler is not None:
            self._connect()  # a wrong address is a one-line error before any file is read

    def _connect(self) -> Any:
        if self._client is not None:
            return self._client
        from distributed import Client, LocalCluster

        if self.scheduler is None:
            import dask

            # the workers' statistical profiler samples the running file's stack every 10 ms: no one
            # looks at it here, and it costs the files time
            with dask.config.set({"distributed.worker.profile.enabled": False}):
                self._cluster = LocalCluster(
                    n_workers=self.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                    dashboard_address=None, silence_logs=logging.ERROR, preload=["pipeline.dask"],
                    # the scheduler serves health and metrics over HTTP even without a dashboard:
                    # on a free port, not the fixed 8787 another cluster may hold
                    scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                )
            self._client = Client(self._cluster, set_as_default=False)
            return self._client
        try:
            self._client = Client(self.scheduler, timeout=self.connect_timeout_s, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError(
                f"cannot reach the Dask scheduler at {self.scheduler} ({type(exc).__name__}: {exc}); "
                "start one with `dask scheduler` and workers with `dask worker ADDRESS`"
            ) from None
        self._check_workers(self._client)
        return self._client

    @staticmethod
    def _check_workers(client: Any) -> None:
        """Refuse workers that cannot import voiceprep or run another version of it (their outputs
        would be recorded as this version's)."""
        from . import __version__

        try:
            versions = client.run(worker_version)
        except Exception as exc:  # noqa: BLE001 - whatever a worker raised: it cannot run voiceprep
            raise ConfigError(f"the Dask workers cannot run voiceprep ({type(exc).__name__}: {exc}); "
                              "install the same voiceprep on every worker") from None
        for address, version in sorted(versions.items()):
            if version != __version__:
                raise ConfigError(f"the Dask worker {address} runs voiceprep {version}, this is {__version__}; "
                                  "install the same version on every worker")

    def _window(self, client: Any) -> int:
        now = time.monotonic()
        if now - self._threads_at >= REFRESH_THREADS_S:
            with contextlib.suppress(Exception):
                self._threads = sum(client.nthreads().values())
            self._threads_at = now
        return max(1, WINDOW_PER_THREAD * self._threads)

    def map(self, fn: Callable[[T], R], tasks: Iterable[tuple[int, T]],
            crashed: Callable[[int, T, str], R]) -> Iterator[tuple[int, R]]:
        from distributed import as_completed

        pending = iter(tasks)
        done: Any = None  # made with the client, when the first task arrives
        broken: str | None = None  # why the cluster can take no more tasks
        client: Any = None
        try:
            while True:
                while broken is None and (client is None or len(self._inflight) < self._window(client)):
                    if client is not None and client.status in GONE:  # a closed client takes tasks it never runs
                        broken = SCHEDULER_GONE
                        break
                    nxt = next(pending, None)
                    if nxt is None:
                        break
                    try:
                        if client is None:
                            client = self._connect()
                            done = as_completed(loop=client.loop)
                        done.add(self._submit(client, fn, nxt[0], nxt[1], 0))
                    except ConfigError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - e.g. the scheduler went away
                        broken = f"the Dask cluster took no more tasks ({type(exc).__name__}: {exc})"
                        yield nxt[0], crashed(nxt[0], nxt[1], broken)
                if broken is not None:
                    yield from self._drain_broken(pending, crashed, broken)
                if not self._inflight:
                    return
                future = next(done)
                key, task, tries, _ = self._inflight.pop(future.key)
                outcome, why = self._outcome(future)
                if why == "lost" and client.status in GONE:
                    broken = why = SCHEDULER_GONE
                if why is None:
                    yield key, outcome
                elif why == "lost" and tries < RESUBMITS and broken is None:
                    try:
                        done.add(self._submit(client, fn, key, task, tries + 1))
                    except Exception as exc:  # noqa: BLE001 - the scheduler went away
                        broken = f"the Dask cluster took no more tasks ({type(exc).__name__}: {exc})"
                        yield key, crashed(key, task, broken)
                else:
                    yield key, crashed(key, task, why if why != "lost" else "the Dask scheduler lost this task")
        finally:
            self._release()

    def _drain_broken(self, pending: Iterator[tuple[int, T]], crashed: Callable[[int, T, str], R],
                      why: str) -> Iterator[tuple[int, R]]:
        for key, task, _, future in list(self._inflight.values()):
            with contextlib.suppress(Exception):
                future.cancel()
            yield key, crashed(key, task, why)
        self._inflight.clear()
        for key, task in pending:
            yield key, crashed(key, task, why)

    def _submit(self, client: Any, fn: Callable[[Any], Any], key: int, task: Any, tries: int) -> Any:
        name = f"voiceprep-{self._token}-{key}" + (f"-{tries}" if tries else "")
        # in the order handed (tasks handed over together would otherwise start in any order)
        future = client.submit(_on_worker, fn, task, key=name, pure=False, priority=-key)
        self._inflight[future.key] = (key, task, tries, future)
        return future

    @staticmethod
    def _outcome(future: Any) -> tuple[Any, str | None]:
        """(the task's result, None), or (None, why it has none: "lost" when it may be sent again)."""
        from distributed import KilledWorker

        status = future.status
        try:
            if status == "finished":
                return future.result(), None
            if status == "error":
                exc = future.exception()
                if isinstance(exc, KilledWorker):
                    return None, "the worker process died on this file (each worker that took it died)"
                return None, f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - a result that cannot be fetched or unpickled
            return None, f"{type(exc).__name__}: {exc}"
        finally:
            with contextlib.suppress(Exception):
                future.release()
        return None, "lost"

    def stop(self) -> list[int]:
        """Cancel every task not yet back (one already running on a worker of a cluster this
        executor did not start runs to its end: its output is written whole, and made again by
        the next run), close what this executor opened; the keys of the cancelled tasks."""
        keys = [key for key, _, _, _ in self._inflight.values()]
        self._release()
        return keys

    def _release(self) -> None:
        # tearing down a cluster of our own mid-batch (Ctrl-C) makes its nannies and comms log
        # the connections they lose, tracebacks included: expected here, and not the user's news
        with _quiet_logs() if self._cluster is not None else contextlib.nullcontext():
            self._close()

    def _close(self) -> None:
        client, self._client = self._client, None
        futures = [f for _, _, _, f in self._inflight.values()]
        self._inflight.clear()
        if client is None:
            return
        if futures:
            with contextlib.suppress(Exception):
                client.cancel(futures, force=True)
        if self._own_client:
            with contextlib.suppress(Exception):
                client.close(timeout=CLOSE_TIMEOUT_S)
        else:
            self._client = client  # the caller's: left open
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            # its workers are this process's children: killed outright, a worker busy on a file
            # does not hold the stop up (the runner then removes what such a write left)
            for nanny in list(getattr(cluster, "workers", {}).values()):
                pid = getattr(nanny, "pid", None)
                if isinstance(pid, int):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                cluster.close(timeout=CLOSE_TIMEOUT_S)


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """Dask's, tornado's and asyncio's loggers silenced for the duration."""
    loggers = [logging.getLogger(name) for name in ("distributed", "tornado", "asyncio")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _process(job: Job, chain: Any) -> FileResult:
    malloc_for_arrays()
    return work(job, chain, finish_here=True).result


def _worker_chain(config: Config | None) -> Any:
    """The `run` chain to send to workers; its `Session` stages (enrollment) cannot run there."""
    from .config import load

    cfg = config if config is not None else load()
    worker, sessions = cfg.run.split_sessions()
    if len(sessions):
        raise ConfigError(
            f"the run chain ends in {', '.join(sessions.names())}, which runs in one process: "
            "use pipeline.runner.run_batch with executor=DaskExecutor(...) instead"
        )
    return worker


def plan_bag(paths: Iterable[str], out: str, *, partition_size: int = 4) -> Any:
    """A ``dask.bag`` of the `Job`s ``plan(paths, out)`` makes (planned here, in this process:
    each input gets an output no other input shares)."""
    import dask.bag as db

    return db.from_sequence(list(plan(list(paths), out)), partition_size=partition_size)


def process_bag(jobs: Any, config: Config | None = None) -> Any:
    """Map the `run` chain over a ``dask.bag`` of `Job`s (or of ``(input, output)`` pairs): a bag
    of `FileResult`s. Computing it writes each output (atomically; local paths or fsspec URLs)
    on the worker that processed it. A bad file is a rejected result, never an exception.

    ``process_bag(plan_bag(["s3://bucket/in/"], "s3://bucket/out/"), config).compute()``

    This is the stateless form: for resumable runs with a report, use
    ``run_batch(plan(paths, out), config, out, executor=DaskExecutor(client=client))``."""
    return jobs.map(_as_job).map(partial(_process, chain=_worker_chain(config)))


def process_delayed(jobs: Iterable[Job | tuple[str, str]], config: Config | None = None) -> list[Any]:
    """One ``dask.delayed`` task per job, each computing that input's `FileResult` (and writing
    its output): ``dask.compute(*process_delayed(plan(paths, out)))``."""
    from dask import delayed

    chain = _worker_chain(config)
    task = delayed(_process, pure=False)
    return [task(_as_job(job), chain) for job in jobs]


def _as_job(item: Job | tuple[str, str]) -> Job:
    return item if isinstance(item, Job) else Job(*item)


__all__ = ["DaskExecutor", "plan_bag", "process_bag", "process_delayed", "require"]
