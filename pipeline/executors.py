"""Where per-file work runs: in this process, or in worker processes that die with their parent."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    """Runs ``fn`` on every task and yields ``(key, result)`` as results arrive (any order).
    ``crashed(key, why)`` makes the result of a task whose worker died. ``stop()`` abandons what
    is running and returns the keys of those tasks."""

    def map(self, fn: Callable[[T], R], tasks: Iterable[tuple[int, T]],
            crashed: Callable[[int, T, str], R]) -> Iterator[tuple[int, R]]: ...

    def stop(self) -> list[int]: ...


class Serial:
    """Every task in this process, one after the other."""

    def __init__(self) -> None:
        self._current: int | None = None

    def map(self, fn: Callable[[T], R], tasks: Iterable[tuple[int, T]],
            crashed: Callable[[int, T, str], R]) -> Iterator[tuple[int, R]]:
        for key, task in tasks:
            self._current = key
            yield key, fn(task)
            self._current = None

    def stop(self) -> list[int]:
        return [] if self._current is None else [self._current]


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (prctl PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def _worker(conn: Any, fn: Callable[[Any], Any], parent: int) -> None:
    """A worker process: Ctrl-C is the parent's to handle; take tasks until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            break
        if task is None:
            break
        key, item = task
        try:
            conn.send((key, fn(item), None))
        except Exception as exc:  # noqa: BLE001 - e.g. a result that does not pickle: that task's error
            conn.send((key, None, f"{type(exc).__name__}: {exc}"))
    conn.close()


class LocalPool:
    """``workers`` processes, one task each at a time, so the task of a worker that dies is known:
    it becomes that task's error and a fresh worker takes its place (the pool keeps its width).
    Workers ignore Ctrl-C and die with the parent, even when it is killed."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        methods = multiprocessing.get_all_start_methods()
        self._ctx: Any = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self._procs: dict[int, tuple[Any, Any, int | None]] = {}  # pid -> (process, connection, key)

    def _start(self, fn: Callable[[Any], Any]) -> int:
        parent_end, child_end = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker, args=(child_end, fn, os.getpid()), daemon=True)
        proc.start()
        child_end.close()
        self._procs[proc.pid] = (proc, parent_end, None)
        return int(proc.pid)

    def map(self, fn: Callable[[T], R], tasks: Iterable[tuple[int, T]],
            crashed: Callable[[int, T, str], R]) -> Iterator[tuple[int, R]]:
        from multiprocessing.connection import wait

        pending = iter(tasks)
        returned: list[tuple[int, T]] = []  # tasks whose idle worker had died before taking them
        held: dict[int, T] = {}
        exhausted = False
        try:
            while True:
                # every idle worker gets a task; more start, up to the width, while tasks remain (a
                # batch of unchanged inputs starts none)
                while True:
                    idle = [pid for pid, (_, _, key) in self._procs.items() if key is None]
                    if not idle and len(self._procs) >= self.workers:
                        break
                    nxt = returned.pop() if returned else (None if exhausted else next(pending, None))
                    if nxt is None:
                        exhausted = True
                        break
                    pid = idle[0] if idle else self._start(fn)
                    proc, conn, _ = self._procs[pid]
                    try:
                        conn.send(nxt)
                    except OSError:  # the worker died while idle: a fresh one takes the task
                        returned.append(nxt)
                        conn.close()
                        del self._procs[pid]
                        continue
                    held[nxt[0]] = nxt[1]
                    self._procs[pid] = (proc, conn, nxt[0])
                busy = {pid: (proc, conn, key) for pid, (proc, conn, key) in self._procs.items() if key is not None}
                if not busy:
                    if returned:
                        continue
                    return
                ready = wait([c for _, c, _ in busy.values()] + [p.sentinel for p, _, _ in busy.values()])
                for pid, (proc, conn, key) in busy.items():
                    if key is None:
                        continue
                    if conn in ready:
                        try:
                            _, result, error = conn.recv()
                        except (EOFError, OSError):
                            result, error = None, "the worker process died on this file"
                        self._procs[pid] = (proc, conn, None)
                        task = held.pop(key)
                        yield key, (result if error is None else crashed(key, task, error))
                    elif proc.sentinel in ready:
                        conn.close()
                        del self._procs[pid]
                        yield key, crashed(key, held.pop(key), "the worker process died on this file")
        finally:
            self._shutdown()

    def stop(self) -> list[int]:
        keys = [key for _, _, key in self._procs.values() if key is not None]
        for proc, _, _ in self._procs.values():
            with contextlib.suppress(OSError):
                proc.kill()
        return keys

    def _shutdown(self) -> None:
        for proc, conn, key in self._procs.values():
            with contextlib.suppress(OSError):
                if key is None:
                    conn.send(None)
                else:
                    proc.kill()
        for proc, conn, _ in self._procs.values():
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
            conn.close()
        self._procs.clear()
