"""A local emulator of the CosyVoice voice-enrollment and synthesis service (aiohttp, SQLite state).

Serves, on one port:

- ``POST /api/v1/services/audio/tts/customization``: create/list/query/update/delete_voice;
- ``GET /api/v1/uploads?action=getPolicy&model=M`` and the form-upload host ``POST /emulator-oss/upload``;
- ``GET /api-ws/v1/inference``: the duplex synthesis WebSocket (see ``emulator_synth``).

What is answered synchronously and what later: ``create_voice``/``update_voice`` validate the
request, fetch the ``url`` (loopback http(s) or a resolvable ``oss://`` key only), and judge the
audio with the project's own ``check`` rules *before* answering, so a refused file gets the
service's 400/500 code at once (as real traffic shows for ``Audio.AudioSilentError``). A
clip that passes is answered with a voice id in ``DEPLOYING``; it becomes ``OK`` after
``deploy_delay_s``, or ``UNDEPLOYED`` when its later processing fails: a verdict code listed in
``undeploy_codes``, a warning listed in ``undeploy_warnings``, a URL fault rule ``UNDEPLOYED``,
or an action fault's ``undeploy_rate``.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import re
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from aiohttp import web

from .emulator_store import Store

if TYPE_CHECKING:
    import aiohttp

    from pipeline.config import Config
    from pipeline.verdict import Verdict

log = logging.getLogger("voiceprep.emulator")

CUSTOMIZATION_PATH = "/api/v1/services/audio/tts/customization"
UPLOADS_PATH = "/api/v1/uploads"
OSS_UPLOAD_PATH = "/emulator-oss/upload"
WS_PATH = "/api-ws/v1/inference"
ENROLLMENT_MODEL = "voice-enrollment"
OSS_BUCKET = "dashscope-instant"
RESOLVE_HEADER = "X-DashScope-OssResourceResolve"

TARGET_MODELS: tuple[str, ...] = (
    "cosyvoice-v3.5-plus",
    "cosyvoice-v3.5-flash",
    "cosyvoice-v3-plus",
    "cosyvoice-v3-flash",
    "cosyvoice-v2",
    "cosyvoice-v1",
    "qwen-audio-3.0-tts-flash",
    "qwen-audio-3.0-tts-plus",
)
ACTIONS = ("create_voice", "list_voice", "query_voice", "update_voice", "delete_voice")
FAULT_SCOPES = (*ACTIONS, "get_policy", "upload", "synthesis")

# The service's own messages for its codes (reference §4.2), used verbatim.
MESSAGES: dict[str, str] = {
    "InvalidApiKey": "Invalid API-key provided.",
    "BadRequest.EmptyInput": "Required input parameter missing from request.",
    "BadRequest.EmptyModel": 'Required parameter "model" missing from request.',
    "BadRequest.IllegalInput": "The input parameter requires json format.",
    "BadRequest.UnsupportedFileFormat": "File format unsupported.",
    "BadRequest.ResourceNotExist": "The Required resource not exist.",
    "Audio.AudioShortError": "valid audio too short!",
    "Audio.AudioSilentError": "silent audio error!",
    "Audio.DecoderError": "Decoder audio file failed.",
    "Audio.FileSizeExceed": "File too large",
    "Audio.AudioRateError": "File sample rate unsupported",
    "Throttling": "Requests throttling triggered.",
    "Throttling.RateQuota": "Requests rate limit exceeded, please try again later.",
    "Throttling.BurstRate": "Request rate increased too quickly, please try again later.",
    "InternalError": "audio preprocess server error",
    "ModelUnavailable": "Model is unavailable, please try again later.",
    "AccessDenied": "Access denied.",
}
GENERIC_INTERNAL = "An internal error has occured, please try again later or contact service support."


def status_for(code: str) -> int:
    """The HTTP status the emulator answers ``code`` with (clients must key on the code)."""
    if code in ("InvalidApiKey", "NOT AUTHORIZED"):
        return 401
    if code.startswith(("AccessDenied", "Model.AccessDenied")):
        return 403
    if code == "Throttling.AllocationQuota":
        return 400
    if code.startswith("Throttling"):
        return 429
    if code.startswith("InternalError"):
        return 500
    if code in ("ModelUnavailable", "ModelServingError"):
        return 503
    return 400


class ServiceError(Exception):
    """A refusal answered as ``{"request_id", "code", "message"}`` with the code's HTTP status."""

    def __init__(self, code: str, message: str | None = None, status: int | None = None) -> None:
        self.code = code
        self.message = message if message is not None else MESSAGES.get(code, code)
        self.status = status if status is not None else status_for(code)
        super().__init__(f"{code}: {self.message}")


class Dropped(Exception):
    """Fault injection closed the connection: nothing is answered."""


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionFault:
    """Faults injected on one scope (an action, ``get_policy``, ``upload`` or ``synthesis``).

    ``error_rate`` answers ``code`` (default InternalError, 500) instead of serving; ``latency_s``
    delays the answer; ``drop_rate`` closes the connection without an answer; ``undeploy_rate``
    (create/update only) lets the voice end ``UNDEPLOYED``.
    """

    error_rate: float = 0.0
    code: str = "InternalError"
    message: str | None = None
    latency_s: float = 0.0
    drop_rate: float = 0.0
    undeploy_rate: float = 0.0


@dataclass(frozen=True)
class UrlFault:
    """For a create/update ``url`` matching ``pattern`` (regex search): answer ``code`` without fetching.

    ``code`` is a service code (answered synchronously), ``UNDEPLOYED`` (accepted, then fails
    later) or ``OK`` (accepted without fetching: for clients testing with fake URLs).
    """

    pattern: str
    code: str
    message: str | None = None


@dataclass(frozen=True)
class Faults:
    """Fault injection: global ``latency_s``, per-scope ``actions``, per-URL ``urls``; ``seed`` fixes the dice."""

    seed: int | None = None
    latency_s: float = 0.0
    actions: Mapping[str, ActionFault] = field(default_factory=dict)
    urls: tuple[UrlFault, ...] = ()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Faults:
        """Strictly parse ``{seed, latency_s, actions: {scope: {...}}, urls: [{pattern, code, message}]}``."""
        from pipeline.errors import ConfigError

        if not isinstance(data, Mapping):
            raise ConfigError("faults: expected a mapping")
        unknown = set(data) - {"seed", "latency_s", "actions", "urls"}
        if unknown:
            raise ConfigError(f"faults: unknown keys {sorted(unknown)}; valid: seed, latency_s, actions, urls")
        actions: dict[str, ActionFault] = {}
        fields = {f.name for f in dataclasses.fields(ActionFault)}
        for scope, spec in (data.get("actions") or {}).items():
            if scope not in FAULT_SCOPES:
                raise ConfigError(f"faults.actions: unknown scope {scope!r}; valid: {', '.join(FAULT_SCOPES)}")
            if not isinstance(spec, Mapping) or set(spec) - fields:
                raise ConfigError(f"faults.actions.{scope}: expected a mapping of {', '.join(sorted(fields))}")
            actions[scope] = ActionFault(**spec)
        urls = []
        for i, spec in enumerate(data.get("urls") or ()):
            if not isinstance(spec, Mapping) or "pattern" not in spec or "code" not in spec:
                raise ConfigError(f"faults.urls[{i}]: expected {{pattern, code[, message]}}")
            if set(spec) - {"pattern", "code", "message"}:
                raise ConfigError(f"faults.urls[{i}]: unknown keys {sorted(set(spec) - {'pattern', 'code', 'message'})}")
            try:
                re.compile(spec["pattern"])
            except re.error as exc:
                raise ConfigError(f"faults.urls[{i}]: bad pattern: {exc}") from None
            urls.append(UrlFault(str(spec["pattern"]), str(spec["code"]), spec.get("message")))
        return cls(
            seed=data.get("seed"), latency_s=float(data.get("latency_s", 0.0)), actions=actions, urls=tuple(urls)
        )

    @classmethod
    def load(cls, path: str | Path) -> Faults:
        """Read a faults file (JSON or YAML)."""
        import yaml

        from pipeline.errors import ConfigError

        try:
            text = Path(path).read_text(encoding="utf-8")
            data = yaml.safe_load(text) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read faults file: {exc}", source=str(path)) from None
        return cls.from_mapping(data)

    def for_scope(self, scope: str) -> ActionFault:
        return self.actions.get(scope) or ActionFault()


DEFAULT_API_KEY = "sk-emulator"
SYSTEM_VOICES = ("longxiaochun", "longxiaochun_v2", "longxiaoxia_v2", "longwan", "longwan_v2", "longcheng_v2")


@dataclass(frozen=True)
class Settings:
    """Emulator behaviour. Times in seconds; ``None`` rate disables rate limiting.

    ``api_keys`` are never shown in the repr.
    """

    api_keys: tuple[str, ...] = field(default=(DEFAULT_API_KEY,), repr=False)
    deploy_delay_s: float = 10.0
    quota: int = 1000
    rate_limit_rps: float | None = 20.0
    rate_limit_burst: int = 40
    policy_rps: float = 100.0
    upload_ttl_s: float = 48 * 3600.0
    policy_expire_s: int = 300
    max_upload_mb: int = 100
    max_fetch_mb: int = 32
    fetch_timeout_s: float = 30.0
    strict_prefix: bool = True
    undeploy_codes: frozenset[str] = frozenset()
    undeploy_warnings: frozenset[str] = frozenset()
    idle_timeout_s: float = 23.0
    system_voices: tuple[str, ...] = SYSTEM_VOICES
    faults: Faults = field(default_factory=Faults)


# --- rate limiting ---------------------------------------------------------------------------


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; ``take()`` is False when empty."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


# --- the fetch: loopback only ----------------------------------------------------------------


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


# --- the emulator ----------------------------------------------------------------------------


class Emulator:
    """The service state and its request handlers; one instance per running server."""

    def __init__(self, data_dir: str | Path, settings: Settings | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.settings = settings or Settings()
        self.store = Store(self.data_dir)
        self.secret = self.store.secret()
        self.rng = random.Random(self.settings.faults.seed)
        self.buckets: dict[tuple[str, str], TokenBucket] = {}
        self.judge_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="emulator-judge")
        self._config: Config | None = None
        self._session: aiohttp.ClientSession | None = None

    def configure(self, **changes: Any) -> None:
        """Replace settings (e.g. faults, rate limit); resets the fault dice and rate buckets."""
        if "faults" in changes and isinstance(changes["faults"], Mapping):
            changes["faults"] = Faults.from_mapping(changes["faults"])
        if "api_keys" in changes:
            changes["api_keys"] = tuple(changes["api_keys"])
        self.settings = dataclasses.replace(self.settings, **changes)
        self.rng = random.Random(self.settings.faults.seed)
        self.buckets.clear()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        self.judge_pool.shutdown(wait=True, cancel_futures=True)
        self.store.close()

    # -- helpers ------------------------------------------------------------------------------

    def _account(self, request: web.Request) -> str:
        """The accepted key's fingerprint (never the key), or raise InvalidApiKey."""
        auth = request.headers.get("Authorization", "")
        scheme, _, key = auth.partition(" ")
        key = key.strip()
        if scheme.lower() == "bearer" and key:
            for accepted in self.settings.api_keys:
                if hmac.compare_digest(key.encode(), accepted.encode()):
                    return hashlib.sha256(key.encode()).hexdigest()[:12]
        raise ServiceError("InvalidApiKey")

    def _throttle(self, account: str, scope: str, rate: float | None, burst: float) -> None:
        if not rate:
            return
        bucket = self.buckets.get((account, scope))
        if bucket is None:
            bucket = self.buckets[(account, scope)] = TokenBucket(rate, burst)
        if not bucket.take():
            raise ServiceError("Throttling.RateQuota")

    async def _inject(self, request: web.Request | None, scope: str) -> ActionFault:
        """Apply latency, dropped connections and injected errors for ``scope``."""
        faults = self.settings.faults
        spec = faults.for_scope(scope)
        delay = faults.latency_s + spec.latency_s
        if delay > 0:
            await asyncio.sleep(delay)
        if spec.drop_rate and self.rng.random() < spec.drop_rate:
            if request is not None and request.transport is not None:
                request.transport.abort()
            raise Dropped(scope)
        if spec.error_rate and self.rng.random() < spec.error_rate:
            message = spec.message
            if message is None and spec.code == "InternalError":
                message = GENERIC_INTERNAL
            raise ServiceError(spec.code, message)
        return spec

    @staticmethod
    def _reply(rid: str, status: int, body: dict[str, Any]) -> web.Response:
        return web.json_response(
            body,
            status=status,
            headers={"x-request-id": rid, "x-dashscope-call-gateway": "true"},
            dumps=lambda o: json.dumps(o, ensure_ascii=False),
        )

    def _error(self, rid: str, exc: ServiceError) -> web.Response:
        return self._reply(rid, exc.status, {"request_id": rid, "code": exc.code, "message": exc.message})

    # -- customization ------------------------------------------------------------------------

    async def handle_customization(self, request: web.Request) -> web.StreamResponse:
        rid = str(uuid.uuid4())
        try:
            account = self._account(request)
            s = self.settings
            self._throttle(account, "customization", s.rate_limit_rps, s.rate_limit_burst)
            raw = await request.read()
            try:
                body = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise ServiceError("BadRequest.IllegalInput") from None
            if not isinstance(body, dict):
                raise ServiceError("BadRequest.IllegalInput")
            model = body.get("model")
            if not model:
                raise ServiceError("BadRequest.EmptyModel")
            inp = body.get("input")
            if not isinstance(inp, dict) or not inp:
                raise ServiceError("BadRequest.EmptyInput")
            if model != ENROLLMENT_MODEL:
                raise ServiceError("InvalidParameter", "Model not exist.")
            action = inp.get("action")
            if action not in ACTIONS:
                raise ServiceError("InvalidParameter", f"Unsupported action: {action}")
            spec = await self._inject(request, str(action))
            output = await getattr(self, f"_{action}")(request, inp, str(model), spec)
        except ServiceError as exc:
            log.info("%s %s -> %s %s", rid, request.path, exc.status, exc.code)
            return self._error(rid, exc)
        except Dropped:
            return _dropped()
        return self._reply(rid, 200, {"output": output, "usage": {"count": 1}, "request_id": rid})

    @staticmethod
    def _voice_id(inp: dict[str, Any]) -> str:
        vid = inp.get("voice_id")
        if not isinstance(vid, str) or not vid:
            raise ServiceError("InvalidParameter", "Missing required parameter: voice_id")
        return vid

    def _check_prefix(self, prefix: Any) -> str:
        if not isinstance(prefix, str) or not prefix:
            raise ServiceError("InvalidParameter", "Missing required parameter: prefix")
        if len(prefix) > 10:
            raise ServiceError("InvalidParameter", "prefix should not be longer than 10 characters")
        pattern = r"[a-z0-9]+" if self.settings.strict_prefix else r"[A-Za-z0-9_]+"
        if not re.fullmatch(pattern, prefix):
            what = "digits and lowercase letters" if self.settings.strict_prefix else "digits, letters and underscores"
            raise ServiceError("InvalidParameter", f"prefix should contain only {what}")
        return prefix

    async def _create_voice(
        self, request: web.Request, inp: dict[str, Any], model: str, spec: ActionFault
    ) -> dict[str, Any]:
        target = inp.get("target_model")
        if not isinstance(target, str) or not target:
            raise ServiceError("InvalidParameter", "Missing required parameter: target_model")
        if target not in TARGET_MODELS:
            raise ServiceError("InvalidParameter", f"target_model {target} is not supported")
        prefix = self._check_prefix(inp.get("prefix"))
        url = self._url(inp)
        if self.store.count() >= self.settings.quota:
            raise ServiceError("Throttling.AllocationQuota", f"您当前的配额为{self.settings.quota}")
        outcome = await self._admit(request, url, model, spec)
        voice_id = f"{target}-{prefix}-{uuid.uuid4().hex}"
        if self.store.count() >= self.settings.quota:  # re-check: judging awaited
            raise ServiceError("Throttling.AllocationQuota", f"您当前的配额为{self.settings.quota}")
        self.store.add(voice_id, prefix, target, url, time.time() + self.settings.deploy_delay_s, outcome)
        log.info("voice %s created (%s)", voice_id, outcome)
        return {"voice_id": voice_id}

    async def _list_voice(
        self, request: web.Request, inp: dict[str, Any], model: str, spec: ActionFault
    ) -> dict[str, Any]:
        prefix = inp.get("prefix")
        if prefix is not None and not isinstance(prefix, str):
            raise ServiceError("InvalidParameter", "prefix must be a string")
        page_index = inp.get("page_index", 0)
        page_size = inp.get("page_size", 10)
        if not isinstance(page_index, int) or isinstance(page_index, bool) or page_index < 0:
            raise ServiceError("InvalidParameter", "page_index must be a non-negative integer")
        if not isinstance(page_size, int) or isinstance(page_size, bool) or not 1 <= page_size <= 1000:
            raise ServiceError("InvalidParameter", "page_size must be an integer between 1 and 1000")
        voices = self.store.page(prefix or None, page_index, page_size)
        return {"voice_list": [v.list_item() for v in voices]}

    async def _query_voice(
        self, request: web.Request, inp: dict[str, Any], model: str, spec: ActionFault
    ) -> dict[str, Any]:
        voice = self.store.get(self._voice_id(inp))
        if voice is None:
            raise ServiceError("BadRequest.ResourceNotExist")
        return voice.query_output()

    async def _update_voice(
        self, request: web.Request, inp: dict[str, Any], model: str, spec: ActionFault
    ) -> dict[str, Any]:
        vid = self._voice_id(inp)
        if self.store.get(vid) is None:
            raise ServiceError("BadRequest.ResourceNotExist")
        url = self._url(inp)
        outcome = await self._admit(request, url, model, spec)
        if not self.store.redeploy(vid, url, time.time() + self.settings.deploy_delay_s, outcome):
            raise ServiceError("BadRequest.ResourceNotExist")
        return {}

    async def _delete_voice(
        self, request: web.Request, inp: dict[str, Any], model: str, spec: ActionFault
    ) -> dict[str, Any]:
        if not self.store.delete(self._voice_id(inp)):
            raise ServiceError("BadRequest.ResourceNotExist")
        return {}

    # -- fetching and judging -----------------------------------------------------------------

    @staticmethod
    def _url(inp: dict[str, Any]) -> str:
        url = inp.get("url")
        if not isinstance(url, str) or not url:
            raise ServiceError("InvalidParameter", "Missing required parameter: url")
        if urlsplit(url).scheme.lower() not in ("http", "https", "oss"):
            raise ServiceError("InvalidParameter", "url must be an http(s) or oss:// URL")
        return url

    async def _admit(self, request: web.Request, url: str, model: str, spec: ActionFault) -> str:
        """Fetch and judge ``url``; raise the service's refusal, or return the later outcome (OK/UNDEPLOYED)."""
        later_fail = bool(spec.undeploy_rate) and self.rng.random() < spec.undeploy_rate
        for rule in self.settings.faults.urls:
            if re.search(rule.pattern, url):
                if rule.code == "OK":
                    return "UNDEPLOYED" if later_fail else "OK"
                if rule.code == "UNDEPLOYED":
                    return "UNDEPLOYED"
                raise ServiceError(rule.code, rule.message)
        path = await self._fetch(request, url, model)
        try:
            verdict = await asyncio.get_running_loop().run_in_executor(self.judge_pool, self._judge, path)
        finally:
            path.unlink(missing_ok=True)
        s = self.settings
        if not verdict.ok:
            code = verdict.code or "InternalError"
            log.info("refused %s: %s", url, verdict.line())
            if code in s.undeploy_codes:
                return "UNDEPLOYED"
            raise ServiceError(code, MESSAGES.get(code, verdict.message))
        if any(w.get("code") in s.undeploy_warnings for w in verdict.warnings):
            return "UNDEPLOYED"
        return "UNDEPLOYED" if later_fail else "OK"

    def _judge(self, path: Path) -> Verdict:
        from pipeline.api import check
        from pipeline.config import load

        if self._config is None:
            self._config = load()
        return check(path, self._config)

    def _tmp(self) -> Path:
        tmp_dir = self.data_dir / "tmp"
        tmp_dir.mkdir(exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="fetch-", dir=tmp_dir)
        with contextlib.suppress(OSError):
            import os

            os.close(fd)
        return Path(name)

    async def _fetch(self, request: web.Request, url: str, model: str) -> Path:
        """The bytes behind ``url`` in a temporary file; loopback http(s) or oss:// only."""
        failed = f"Failed to download the input file: {url}"
        if url.lower().startswith("oss://"):
            if request.headers.get(RESOLVE_HEADER, "").lower() != "enable":
                raise ServiceError(
                    "BadRequest.InputDownloadFailed", f"{failed} (oss:// needs the header {RESOLVE_HEADER}: enable)"
                )
            upload = self.store.upload(url[len("oss://") :])
            if upload is None or upload.model != model:
                raise ServiceError("BadRequest.InputDownloadFailed", failed)
            target = self._tmp()
            await asyncio.get_running_loop().run_in_executor(None, _copy, Path(upload.path), target)
            return target
        limit = self.settings.max_fetch_mb * 1024 * 1024
        current = url
        for _hop in range(4):
            host = urlsplit(current).hostname or ""
            if urlsplit(current).scheme.lower() not in ("http", "https") or not is_loopback_host(host):
                log.info("refused to fetch non-loopback url")
                raise ServiceError("BadRequest.InputDownloadFailed", failed)
            target = self._tmp()
            try:
                status, location = await self._get(current, target, limit)
            except ServiceError:
                target.unlink(missing_ok=True)
                raise
            if status in (301, 302, 303, 307, 308) and location:
                target.unlink(missing_ok=True)
                current = urljoin(current, location)
                continue
            if status != 200:
                target.unlink(missing_ok=True)
                raise ServiceError("BadRequest.InputDownloadFailed", failed)
            return target
        raise ServiceError("BadRequest.InputDownloadFailed", failed)

    async def _get(self, url: str, target: Path, limit: int) -> tuple[int, str | None]:
        import aiohttp

        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=LoopbackResolver(), use_dns_cache=False)  # type: ignore[arg-type]
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        failed = f"Failed to download the input file: {url}"
        timeout = aiohttp.ClientTimeout(total=self.settings.fetch_timeout_s)
        try:
            async with self._session.get(url, allow_redirects=False, timeout=timeout) as resp:
                if resp.status != 200:
                    return resp.status, resp.headers.get("Location")
                size = 0
                with target.open("wb") as fh:
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        size += len(chunk)
                        if size > limit:
                            raise ServiceError("BadRequest.InputDownloadFailed", f"{failed} (larger than {limit} bytes)")
                        fh.write(chunk)
                return 200, None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            raise ServiceError("BadRequest.InputDownloadFailed", failed) from None

    # -- temporary uploads --------------------------------------------------------------------

    async def handle_get_policy(self, request: web.Request) -> web.StreamResponse:
        rid = str(uuid.uuid4())
        try:
            account = self._account(request)
            s = self.settings
            self._throttle(account, "customization", s.rate_limit_rps, s.rate_limit_burst)
            if request.query.get("action") != "getPolicy":
                raise ServiceError("InvalidParameter", "Unsupported action")
            model = request.query.get("model", "")
            if not model:
                raise ServiceError("InvalidParameter", "Missing required parameter: model")
            self._throttle(account, f"policy:{model}", s.policy_rps, s.policy_rps)
            await self._inject(request, "get_policy")
        except ServiceError as exc:
            return self._error(rid, exc)
        except Dropped:
            return _dropped()
        upload_dir = f"{OSS_BUCKET}/{account}/{dt.datetime.now(dt.timezone.utc):%Y-%m-%d}/{uuid.uuid4()}"
        expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=s.policy_expire_s)
        max_bytes = s.max_upload_mb * 1024 * 1024
        policy_doc = {
            "expiration": expires.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "conditions": [
                {"bucket": OSS_BUCKET},
                ["starts-with", "$key", upload_dir],
                ["content-length-range", 0, max_bytes],
            ],
            "x-model": model,
            "x-upload-dir": upload_dir,
        }
        policy = base64.b64encode(json.dumps(policy_doc).encode()).decode()
        data = {
            "policy": policy,
            "signature": self._sign(policy),
            "upload_dir": upload_dir,
            "upload_host": f"{request.scheme}://{request.host}{OSS_UPLOAD_PATH}",
            "expire_in_seconds": s.policy_expire_s,
            "max_file_size_mb": s.max_upload_mb,
            "capacity_limit_mb": 999999999,
            "oss_access_key_id": "LTAI-emulator",
            "x_oss_object_acl": "private",
            "x_oss_forbid_overwrite": "true",
        }
        return self._reply(rid, 200, {"request_id": rid, "data": data})

    def _sign(self, policy: str) -> str:
        return base64.b64encode(hmac.new(self.secret, policy.encode(), hashlib.sha1).digest()).decode()

    async def handle_oss_upload(self, request: web.Request) -> web.StreamResponse:
        rid = uuid.uuid4().hex.upper()[:24]
        try:
            await self._inject(request, "upload")
        except ServiceError as exc:
            return _oss_error(rid, 500 if exc.status >= 500 else exc.status, exc.code, exc.message)
        except Dropped:
            return _dropped()
        if not request.content_type.startswith("multipart/"):
            return _oss_error(rid, 400, "InvalidArgument", "The body of your POST request is not well-formed multipart/form-data.")
        form: dict[str, str] = {}
        reader = await request.multipart()
        staged: Path | None = None
        size = 0
        try:
            while True:
                part = await reader.next()
                if part is None:
                    break
                if staged is not None:
                    return _oss_error(rid, 400, "InvalidArgument", "The file must be the last field of the form.")
                name = getattr(part, "name", None) or ""
                if name != "file":
                    form[name] = (await part.text())[:4096]  # type: ignore[union-attr]
                    continue
                error = self._check_policy(form)
                if error:
                    return _oss_error(rid, *error)
                max_bytes = self.settings.max_upload_mb * 1024 * 1024
                staged = self._tmp()
                with staged.open("wb") as fh:
                    while chunk := await part.read_chunk(1 << 16):  # type: ignore[union-attr]
                        size += len(chunk)
                        if size > max_bytes:
                            return _oss_error(rid, 400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size.")
                        fh.write(chunk)
            if staged is None:
                return _oss_error(rid, 400, "InvalidArgument", "The form has no file field.")
            key = form["key"]
            if form.get("x-oss-forbid-overwrite", "").lower() == "true" and self.store.upload_exists(key):
                return _oss_error(rid, 409, "FileAlreadyExists", "The object you specified already exists and can not be overwritten.")
            final = self.data_dir / "uploads" / hashlib.sha256(key.encode()).hexdigest()
            staged.replace(final)
            staged = None
            model = json.loads(base64.b64decode(form["policy"]))["x-model"]
            self.store.put_upload(key, model, str(final), size, self.settings.upload_ttl_s)
            self.store.purge_uploads()
        finally:
            if staged is not None:
                staged.unlink(missing_ok=True)
        status = 204 if form.get("success_action_status") == "204" else 200
        return web.Response(status=status, headers={"x-oss-request-id": rid})

    def _check_policy(self, form: Mapping[str, str]) -> tuple[int, str, str] | None:
        for required in ("OSSAccessKeyId", "Signature", "policy", "key"):
            if not form.get(required):
                return 400, "InvalidArgument", f"The form field {required} is missing."
        if not hmac.compare_digest(self._sign(form["policy"]), form["Signature"]):
            return 403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided."
        try:
            doc = json.loads(base64.b64decode(form["policy"]))
            expires = dt.datetime.strptime(doc["expiration"], "%Y-%m-%dT%H:%M:%S.000Z").replace(tzinfo=dt.timezone.utc)
            upload_dir = str(doc["x-upload-dir"])
        except (ValueError, KeyError, TypeError):
            return 403, "AccessDenied", "Invalid Policy."
        if expires <= dt.datetime.now(dt.timezone.utc):
            return 403, "AccessDenied", "Invalid according to Policy: Policy expired."
        if not form["key"].startswith(upload_dir + "/") or ".." in form["key"].split("/"):
            return 403, "AccessDenied", "Invalid according to Policy: Policy Condition failed: [\"starts-with\", \"$key\"]"
        return None

    # -- app ----------------------------------------------------------------------------------

    def app(self) -> web.Application:
        from .emulator_synth import SynthesisHandler

        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post(CUSTOMIZATION_PATH, self.handle_customization)
        app.router.add_get(UPLOADS_PATH, self.handle_get_policy)
        app.router.add_post(OSS_UPLOAD_PATH, self.handle_oss_upload)
        app.router.add_get(WS_PATH, SynthesisHandler(self).handle)

        async def _close(_app: web.Application) -> None:
            await self.close()

        app.on_cleanup.append(_close)
        return app


def _dropped() -> web.Response:
    """The answer to a dropped request; its transport is already aborted, so nothing reaches the client."""
    return web.Response(status=599)


def _copy(src: Path, dst: Path) -> None:
    import shutil

    shutil.copyfile(src, dst)


def _oss_error(rid: str, status: int, code: str, message: str) -> web.Response:
    from xml.sax.saxutils import escape

    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"<RequestId>{rid}</RequestId><HostId>emulator</HostId></Error>"
    )
    return web.Response(status=status, text=body, content_type="application/xml", headers={"x-oss-request-id": rid})


# --- running it --------------------------------------------------------------------------------


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
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

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
        fut.result(timeout=10)

    def stop(self) -> None:
        if not self._loop.is_running():
            return
        fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        try:
            fut.result(timeout=30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)

    def __enter__(self) -> EmulatorHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _call(fn: Any, **kw: Any) -> None:
    fn(**kw)


async def start(emulator: Emulator, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving ``emulator`` on ``host:port`` (0 = a free port); returns the runner and the port."""
    runner = web.AppRunner(emulator.app(), access_log=log, access_log_format='%a "%r" %s %b %Tfs')
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or ()
    bound = int(sockets[0].getsockname()[1]) if sockets else port
    return runner, bound


def start_in_thread(
    data_dir: str | Path, *, host: str = "127.0.0.1", port: int = 0, **settings: Any
) -> EmulatorHandle:
    """Run an emulator in a daemon thread on ``host`` (default a free port); for tests.

    ``settings`` are ``Settings`` fields; ``faults`` may be a mapping. The first accepted key is
    ``handle.api_key``.
    """
    if isinstance(settings.get("faults"), Mapping):
        settings["faults"] = Faults.from_mapping(settings["faults"])
    if "api_keys" in settings:
        settings["api_keys"] = tuple(settings["api_keys"])
    emulator = Emulator(data_dir, Settings(**settings))
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
    ready.wait(timeout=30)
    if "error" in result:
        raise result["error"]
    if "runner" not in result:
        raise RuntimeError("the emulator did not start within 30 s")
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
    """Serve until cancelled (Ctrl-C in the CLI)."""
    runner, bound = await start(emulator, host, port)
    origin = f"http://{'[' + host + ']' if ':' in host else host}:{bound}"
    print(f"voiceprep emulator listening on {origin} (data in {emulator.data_dir})", flush=True)
    print(f"  export DASHSCOPE_HTTP_BASE_URL={origin}/api/v1", flush=True)
    print(f"  export DASHSCOPE_WEBSOCKET_BASE_URL=ws{origin[4:]}{WS_PATH}", flush=True)
    if emulator.settings.api_keys == (DEFAULT_API_KEY,):
        print(f"  export DASHSCOPE_API_KEY={DEFAULT_API_KEY}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
