"""Headless Chromium driven over the DevTools protocol (a websocket on 127.0.0.1), for the page tests.

``Browser`` starts ``chromium --headless`` with its own profile in a temporary folder and no
background network; ``Page`` loads a file and records what the page did: uncaught exceptions,
console errors, and every URL it requested.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = (
    "--headless",
    "--no-sandbox",  # tests may run as root in a container
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
START_TIMEOUT_S = 60.0


def executable() -> str | None:
    """The Chromium to drive: $VOICEPREP_CHROMIUM, else `chromium` or `chromium-browser` on PATH."""
    named = os.environ.get("VOICEPREP_CHROMIUM")
    if named:
        return named
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """``async with Browser() as b: page = await b.open(path)``."""

    def __init__(self, exe: str | None = None, width: int = 1280, height: int = 900) -> None:
        self.exe = exe or executable()
        self.width, self.height = width, height
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.listeners: dict[str, list[Any]] = {}
        self.profile = tempfile.TemporaryDirectory(prefix="voiceprep-chromium-")

    async def __aenter__(self) -> Browser:
        if not self.exe:
            raise RuntimeError("chromium is not installed")
        self.proc = subprocess.Popen(
            [self.exe, *FLAGS, f"--user-data-dir={self.profile.name}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.http = aiohttp.ClientSession()
        try:
            port_file = Path(self.profile.name) / "DevToolsActivePort"
            deadline = time.monotonic() + START_TIMEOUT_S
            while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"chromium did not start (exit {self.proc.poll()})")
                await asyncio.sleep(0.05)
            port, path = port_file.read_text().splitlines()[:2]
            self.ws = await self.http.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0)
        except BaseException:
            await self._stop()
            raise
        self.reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.reader.cancel()
        await self.ws.close()
        await self._stop()

    async def _stop(self) -> None:
        await self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.profile.cleanup()

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                fut = self.pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    if "error" in data:
                        fut.set_exception(RuntimeError(f"DevTools: {data['error']}"))
                    else:
                        fut.set_result(data.get("result", {}))
            else:
                for sink in self.listeners.get(data.get("sessionId", ""), []):
                    sink(data["method"], data.get("params", {}))

    async def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        msg_id = next(self.ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[msg_id] = fut
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        await self.ws.send_str(json.dumps(msg))
        return await asyncio.wait_for(fut, START_TIMEOUT_S)

    async def open(self, path: str | Path) -> Page:
        """A new tab showing the file ``path``; returns once it has loaded."""
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"], target["targetId"])
        self.listeners[page.session] = [page.on_event]
        for domain in ("Runtime", "Page", "Network", "Log"):
            await page.send(f"{domain}.enable")
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
        )
        await page.navigate(Path(path).resolve().as_uri())
        return page


class Page:
    """One tab: ``evaluate`` JavaScript, ``wait_for`` a condition, and what the page did."""

    def __init__(self, browser: Browser, session: str, target_id: str) -> None:
        self.browser, self.session, self.target_id = browser, session, target_id
        self.exceptions: list[str] = []
        self.console_errors: list[str] = []
        self.requests: list[str] = []
        self.loaded = asyncio.Event()

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.exceptionThrown":
            d = params["exceptionDetails"]
            self.exceptions.append(str(d.get("exception", {}).get("description") or d.get("text")))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.console_errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.console_errors.append(params["entry"].get("text", ""))
        elif method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Page.loadEventFired":
            self.loaded.set()

    async def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return await self.browser.send(method, params, self.session)

    async def navigate(self, url: str) -> float:
        """Load ``url``; returns the seconds from the request to the load event."""
        self.loaded.clear()
        start = time.perf_counter()
        await self.send("Page.navigate", {"url": url})
        await asyncio.wait_for(self.loaded.wait(), START_TIMEOUT_S)
        return time.perf_counter() - start

    async def evaluate(self, expression: str) -> Any:
        res = await self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in res:
            raise RuntimeError(f"in the page: {res['exceptionDetails'].get('text')}: {expression}")
        return res["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = START_TIMEOUT_S) -> Any:
        """Poll ``expression`` until it is truthy; its value (a page that never gets there fails)."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"never true in the page: {expression}")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self.browser.send("Target.closeTarget", {"targetId": self.target_id})
        self.browser.listeners.pop(self.session, None)

    async def screenshot(self, path: Path) -> None:
        import base64

        shot = await self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})
        path.write_bytes(base64.b64decode(shot["data"]))
