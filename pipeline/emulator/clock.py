"""The emulator's time: the system clock, or for tests a clock that moves only when told to."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Protocol


class Clock(Protocol):
    """What the emulator reads time from: deploy delays, stamps, upload and policy expiry, rate
    buckets and the synthesis idle timeout."""

    def time(self) -> float:
        """Seconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds for intervals (rate buckets); never goes back."""
        ...

    async def wait_until(self, t: float) -> None:
        """Return once ``time()`` has reached ``t``."""
        ...


class SystemClock:
    """The real time."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def wait_until(self, t: float) -> None:
        await asyncio.sleep(max(0.0, t - time.time()))


class ManualClock:
    """A clock for tests that stands still until ``advance``: a voice leaves DEPLOYING, an upload or a
    policy expires, a rate bucket refills and a silent synthesis connection times out exactly when
    the test has moved the clock far enough, never because the machine was slow. Thread-safe:
    ``advance`` may be called from any thread, ``wait_until`` runs on the emulator's event loop.
    It starts at ``start`` (default: now, in whole seconds, so stamps of a second's precision move
    exactly with whole-second advances).
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = float(int(time.time())) if start is None else float(start)
        self._lock = threading.Lock()
        self._waiters: list[tuple[float, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def time(self) -> float:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        return self.time()

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (not negative) and wake what waited for that time."""
        if not seconds >= 0:
            raise ValueError(f"a clock only moves forward, not by {seconds!r} s")
        with self._lock:
            self._now += seconds
            due = [w for w in self._waiters if w[0] <= self._now]
            self._waiters = [w for w in self._waiters if w[0] > self._now]
        for _, loop, fut in due:
            loop.call_soon_threadsafe(_wake, fut)

    async def wait_until(self, t: float) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if t <= self._now:
                return
            self._waiters.append((t, loop, fut))
        try:
            await fut
        finally:
            with self._lock:
                self._waiters = [w for w in self._waiters if w[2] is not fut]


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
