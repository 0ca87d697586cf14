"""Running an emulator: in a background thread for tests (``start_in_thread``), or in the foreground for the CLI."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from .clock import Clock
from .core import Emulator
from .judge import Judge
from .protocol import DEFAULT_API_KEY, WS_PATH
from .routes import build_app
from .settings import Settings

log = logging.getLogger("voiceprep.emulator")

CONTROL_TIMEOUT_S = 30.0


def origin_of(host: str, port: int) -> str:
    """``http://host:port``, with an IPv6 host in brackets."""
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


@dataclass
class EmulatorHandle:
    """A running emulator: URLs to point clients at (``DASHSCOPE_HTTP_BASE_URL`` ...), ``stop()``."""

    host: str
    port: int
    api_key: str = field(repr=False)
    data_dir: Path
    emulator: Emulator = field(repr=False)
    _loop: asyncio.AbstractEventLoop = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _runner: web.AppRunner = field(repr=False)

    @property
    def clock(self) -> Clock:
        """The emulator's clock (a ``ManualClock`` passed to ``start_in_thread`` is moved with ``advance``)."""
        return self.emulator.clock

    @property
    def origin(self) -> str:
        return origin_of(self.host, self.port)

    @property
    def base_http_url(self) -> str:
        return f"{self.origin}/api/v1"

    @property
    def base_ws_url(self) -> str:
        return f"ws{self.origin[4:]}{WS_PATH}"

    def env(self) -> dict[str, str]:
        """Environment variables that point the SDK (and the project's client) at this emulator."""
        return {
            "DASHSCOPE_API_KEY": self.api_key,
            "DASHSCOPE_HTTP_BASE_URL": self.base_http_url,
            "DASHSCOPE_WEBSOCKET_BASE_URL": self.base_ws_url,
        }

    def configure(self, **changes: Any) -> None:
        """Change settings while running (faults, rate limit, deploy delay, quota ...)."""
        fut = asyncio.run_coroutine_threadsafe(_call(self.emulator.configure, **changes), self._loop)
        fut.result(timeout=CONTROL_TIMEOUT_S)

    def stop(self) -> None:
        if not self._loop.is_running():
            return
        fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        try:
            fut.result(timeout=CONTROL_TIMEOUT_S)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=CONTROL_TIMEOUT_S)

    def __enter__(self) -> EmulatorHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _call(fn: Callable[..., None], **kw: Any) -> None:
    fn(**kw)


async def start(emulator: Emulator, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving ``emulator`` on ``host:port`` (0 = a free port); returns the runner and the port."""
    runner = web.AppRunner(build_app(emulator), access_log=log, access_log_format='%a "%r" %s %b %Tfs')
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or ()
    bound = int(sockets[0].getsockname()[1]) if sockets else port
    return runner, bound


def start_in_thread(
    data_dir: str | Path, *, host: str = "127.0.0.1", port: int = 0, judge: Judge | None = None,
    clock: Clock | None = None, **settings: Any
) -> EmulatorHandle:
    """Run an emulator in a daemon thread on ``host`` (default a free port); for tests.

    ``judge`` decides on enrollment audio (default: the project's ``check``). ``clock`` is the
    emulator's time (default the system's; a ``ManualClock`` makes deploy delays, expiries, rate
    buckets and idle timeouts pass only when the test advances it: ``handle.clock``). ``settings``
    are ``Settings`` fields; ``faults`` may be a mapping. The first accepted key is ``handle.api_key``.
    """
    emulator = Emulator(data_dir, Settings.of(**settings), judge=judge, clock=clock)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    result: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            result["runner"], result["port"] = loop.run_until_complete(start(emulator, host, port))
        except Exception as exc:  # noqa: BLE001 - re-raised in the starting thread
            result["error"] = exc
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="voiceprep-emulator", daemon=True)
    thread.start()
    ready.wait(timeout=CONTROL_TIMEOUT_S)
    if "error" in result:
        raise result["error"]
    if "runner" not in result:
        raise RuntimeError(f"the emulator did not start within {CONTROL_TIMEOUT_S:g} s")
    return EmulatorHandle(
        host=host,
        port=result["port"],
        api_key=emulator.settings.api_keys[0],
        data_dir=Path(data_dir),
        emulator=emulator,
        _loop=loop,
        _thread=thread,
        _runner=result["runner"],
    )


async def serve_forever(emulator: Emulator, host: str, port: int) -> None:
    """Serve until cancelled (Ctrl-C in the CLI), after printing where and the variables to export."""
    runner, bound = await start(emulator, host, port)
    origin = origin_of(host, bound)
    print(f"voiceprep emulator listening on {origin} (data in {emulator.data_dir})", flush=True)
    print(f"  export DASHSCOPE_HTTP_BASE_URL={origin}/api/v1", flush=True)
    print(f"  export DASHSCOPE_WEBSOCKET_BASE_URL=ws{origin[4:]}{WS_PATH}", flush=True)
    if emulator.settings.api_keys == (DEFAULT_API_KEY,):
        print(f"  export DASHSCOPE_API_KEY={DEFAULT_API_KEY}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
