"""Fetching an enrollment ``url``: loopback http(s) only, redirects followed only within loopback, size-capped."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from .protocol import Refusal

log = logging.getLogger("voiceprep.emulator")

REDIRECT_STATUSES = (301, 302, 303, 307, 308)
MAX_HOPS = 4


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; no name resolution happens here."""
    h = host.strip("[]").lower().rstrip(".")
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


class LoopbackResolver:
    """An aiohttp resolver that answers only loopback addresses, whatever the name."""

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict[str, Any]]:
        if not is_loopback_host(host):
            raise OSError(f"refusing to resolve non-loopback host {host!r}")
        addr = "::1" if host.strip("[]") == "::1" else ("127.0.0.1" if host.lower() == "localhost" else host)
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        return [{"hostname": host, "host": addr, "port": port, "family": fam, "proto": 0, "flags": 0}]

    async def close(self) -> None:
        return None


def temp_file(directory: Path) -> Path:
    """A new empty file in ``directory`` (created if missing) for fetched bytes."""
    directory.mkdir(exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="fetch-", dir=directory)
    os.close(fd)
    return Path(name)


class Fetcher:
    """Downloads URLs into temporary files under ``tmp_dir`` through one loopback-only client session."""

    def __init__(self, tmp_dir: Path) -> None:
        self.tmp_dir = tmp_dir
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def fetch(self, url: str, limit: int, timeout_s: float) -> Path:
        """The bytes behind ``url`` (at most ``limit``) in a temporary file; refuses anything off loopback.

        Raises Refusal ``BadRequest.InputDownloadFailed`` for a refused host, a failed download or
        too many redirects.
        """
        failed = f"Failed to download the input file: {url}"
        current = url
        for _hop in range(MAX_HOPS):
            parts = urlsplit(current)
            if parts.scheme.lower() not in ("http", "https") or not is_loopback_host(parts.hostname or ""):
                log.info("refused to fetch non-loopback url")
                raise Refusal("BadRequest.InputDownloadFailed", failed)
            target = temp_file(self.tmp_dir)
            try:
                status, location = await self.get(current, target, limit, timeout_s)
            except Refusal:
                target.unlink(missing_ok=True)
                raise
            if status in REDIRECT_STATUSES and location:
                target.unlink(missing_ok=True)
                current = urljoin(current, location)
                continue
            if status != 200:
                target.unlink(missing_ok=True)
                raise Refusal("BadRequest.InputDownloadFailed", failed)
            return target
        raise Refusal("BadRequest.InputDownloadFailed", failed)

    async def get(self, url: str, target: Path, limit: int, timeout_s: float) -> tuple[int, str | None]:
        """One GET without following redirects: a 200 body goes to ``target``; returns the status and Location."""
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=LoopbackResolver(), use_dns_cache=False)  # type: ignore[arg-type]
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        failed = f"Failed to download the input file: {url}"
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with self._session.get(url, allow_redirects=False, timeout=timeout) as resp:
                if resp.status != 200:
                    return resp.status, resp.headers.get("Location")
                size = 0
                with target.open("wb") as fh:
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        size += len(chunk)
                        if size > limit:
                            raise Refusal("BadRequest.InputDownloadFailed", f"{failed} (larger than {limit} bytes)")
                        fh.write(chunk)
                return 200, None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            raise Refusal("BadRequest.InputDownloadFailed", failed) from None
