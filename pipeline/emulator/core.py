"""The emulator's state and what every route shares: keys, rate limits, fault dice, the judge and the store."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import hmac
import random
from pathlib import Path
from typing import Any

from aiohttp import web

from pipeline.service.ratelimit import TokenBucket

from .clock import Clock, SystemClock
from .faults import ActionFault, inject
from .fetch import Fetcher
from .judge import Judge, Judgement, ProjectJudge
from .protocol import Refusal
from .settings import Settings
from .store import Store


class Emulator:
    """One emulated service: its settings, SQLite store, policy secret, rate buckets, fault dice and audio judge.

    ``judge`` decides on every fetched enrollment clip (default: the project's ``check``); it runs
    in one worker thread, so it sees one file at a time. ``clock`` is where every delay, stamp,
    expiry, rate bucket and idle timeout reads time (default: the system's; tests pass a ManualClock).
    """

    def __init__(
        self, data_dir: str | Path, settings: Settings | None = None, judge: Judge | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.settings = settings or Settings()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.store = Store(self.data_dir, clock=self.clock.time)
        self.secret = self.store.secret()
        self.rng = random.Random(self.settings.faults.seed)
        self.buckets: dict[tuple[str, str], TokenBucket] = {}
        self.judge: Judge = judge if judge is not None else ProjectJudge()
        self.judge_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="emulator-judge")
        self.fetcher = Fetcher(self.data_dir / "tmp")

    def configure(self, **changes: Any) -> None:
        """Replace settings (e.g. faults, rate limit); resets the fault dice and rate buckets."""
        self.settings = self.settings.changed(**changes)
        self.rng = random.Random(self.settings.faults.seed)
        self.buckets.clear()

    async def close(self) -> None:
        await self.fetcher.close()
        self.judge_pool.shutdown(wait=True, cancel_futures=True)
        self.store.close()

    def account(self, request: web.Request) -> str:
        """The accepted key's fingerprint (never the key), or raise Refusal InvalidApiKey."""
        auth = request.headers.get("Authorization", "")
        scheme, _, key = auth.partition(" ")
        key = key.strip()
        if scheme.lower() == "bearer" and key:
            for accepted in self.settings.api_keys:
                if hmac.compare_digest(key.encode(), accepted.encode()):
                    return hashlib.sha256(key.encode()).hexdigest()[:12]
        raise Refusal("InvalidApiKey")

    def throttle(self, account: str, scope: str, rate_per_s: float | None, burst: float) -> None:
        """Take a token from ``account``'s bucket for ``scope``, or raise Refusal Throttling.RateQuota."""
        if not rate_per_s:
            return
        bucket = self.buckets.get((account, scope))
        if bucket is None:
            bucket = self.buckets[(account, scope)] = TokenBucket(rate_per_s, max(burst, 1.0), clock=self.clock.monotonic)
        if not bucket.try_acquire():
            raise Refusal("Throttling.RateQuota")

    async def inject(self, request: web.Request | None, scope: str) -> ActionFault:
        """Apply the configured faults for ``scope`` (raises Dropped or Refusal); returns the scope's spec."""
        return await inject(self.settings.faults, self.rng, scope, request)

    async def judge_file(self, path: Path) -> Judgement:
        """The judge's answer on ``path``, computed off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.judge_pool, self.judge, path)
