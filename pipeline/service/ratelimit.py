"""Rate limits: token buckets (one process's, or one shared through a file), and retry backoff."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class Limiter(Protocol):
    """Paces requests: ``acquire`` returns once one may be sent (the seconds it waited)."""

    def acquire(self) -> float: ...


class TokenStore(Protocol):
    """Where a shared bucket lives (the enrollment ledger): ``take_token`` reserves one token in one
    atomic step and returns the seconds to wait for it, or None when the store is out of reach."""

    def take_token(self, name: str, rate_per_s: float, burst: float) -> float | None: ...


class TokenBucket:
    """At most ``rate_per_s`` requests per second on average, with bursts of up to ``burst`` requests.

    ``clock`` and ``sleep`` are injectable so that tests run without waiting. Thread-safe.
    """

    def __init__(
        self,
        rate_per_s: float = 10.0,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst if burst is not None else max(1.0, rate_per_s))
        if self.burst < 1:
            raise ValueError("burst must be at least 1")
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until it is due; returns the seconds waited.

        The token is reserved at once (the bucket may go into debt), so concurrent callers queue in
        order and each sleeps exactly once: no loop that float rounding could keep spinning.
        """
        with self._lock:
            self._refill()
            self._tokens -= 1.0
            delay = -self._tokens / self.rate_per_s if self._tokens < 0 else 0.0
        if delay > 0:
            self._sleep(delay)
        return delay

    def try_acquire(self) -> bool:
        """Take one token if one is there now; never waits and never goes into debt (admission, not pacing)."""
        with self._lock:
            self._refill()
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
            return True

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + max(now - self._last, 0.0) * self.rate_per_s)
        self._last = now


class SharedTokenBucket:
    """A token bucket that every process using the same ``store`` draws from, so that together they
    send at most ``rate_per_s`` requests per second (bursts of ``burst``). The store keeps the tokens
    and when they were counted, read with its own clock; a token is reserved at once (the bucket may
    go into debt) and the caller sleeps until it is due. When the store is out of reach, ``fallback``
    (this process's own bucket) paces the request instead.
    """

    def __init__(
        self,
        store: TokenStore,
        name: str,
        rate_per_s: float,
        burst: float | None = None,
        *,
        fallback: Limiter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.store = store
        self.name = name
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst if burst is not None else max(1.0, rate_per_s))
        if self.burst < 1:
            raise ValueError("burst must be at least 1")
        self.fallback = fallback
        self._sleep = sleep

    def acquire(self) -> float:
        delay = self.store.take_token(self.name, self.rate_per_s, self.burst)
        if delay is None:
            return self.fallback.acquire()
        if delay > 0:
            self._sleep(delay)
        return delay


@dataclass(frozen=True)
class Backoff:
    """Delays between retries: ``base_s * 2**(attempt-1)`` capped at ``max_s``, with "equal jitter"
    (a random value in the upper half), never less than a server's ``Retry-After``."""

    base_s: float = 0.5
    max_s: float = 20.0

    def delay(self, attempt: int, retry_after_s: float | None = None, rng: Callable[[], float] = random.random) -> float:
        ceiling = min(self.max_s, self.base_s * (2 ** max(attempt - 1, 0)))
        d = ceiling / 2 + rng() * ceiling / 2
        if retry_after_s is not None and retry_after_s > d:
            d = min(retry_after_s, 120.0)
        return d
