"""The five voice actions of ``POST /api/v1/services/audio/tts/customization``, and admitting a clip by its URL."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from .core import Emulator
from .faults import ActionFault
from .protocol import (
    ACTIONS,
    ENROLLMENT_MODEL,
    MESSAGES,
    TARGET_MODELS,
    Dropped,
    Refusal,
    dropped_reply,
    refusal_reply,
    reply,
    request_id,
)
from .uploads import Uploads

log = logging.getLogger("voiceprep.emulator")

Action = Callable[[web.Request, dict[str, Any], str, ActionFault], Awaitable[dict[str, Any]]]
PREFIX_MAX_CHARS = 10
PAGE_SIZE_MAX = 1000


class VoiceActions:
    """The customization endpoint of one emulator; ``uploads`` resolves ``oss://`` URLs.

    ``create_voice``/``update_voice`` validate the request, fetch the ``url`` (loopback http(s) or a
    resolvable ``oss://`` key only) and ask the judge *before* answering, so a refused file gets the
    service's 400/500 code at once (as real traffic shows for ``Audio.AudioSilentError``). A clip that
    passes is answered with a voice id in ``DEPLOYING``; it becomes ``OK`` after ``deploy_delay_s``,
    or ``UNDEPLOYED`` when its later processing fails: a verdict code listed in ``undeploy_codes``, a
    warning listed in ``undeploy_warnings``, a URL fault rule ``UNDEPLOYED``, or an action fault's
    ``undeploy_rate``.
    """

    def __init__(self, emulator: Emulator, uploads: Uploads) -> None:
        self.emulator = emulator
        self.uploads = uploads
        self.actions: dict[str, Action] = {
            "create_voice": self.create_voice,
            "list_voice": self.list_voice,
            "query_voice": self.query_voice,
            "update_voice": self.update_voice,
            "delete_voice": self.delete_voice,
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Check the key, the rate, the body and the action; answer the action's output or the refusal."""
        rid = request_id()
        emu = self.emulator
        try:
            account = emu.account(request)
            emu.throttle(account, "customization", emu.settings.rate_limit_rps, emu.settings.rate_limit_burst)
            raw = await request.read()
            try:
                body = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise Refusal("BadRequest.IllegalInput") from None
            if not isinstance(body, dict):
                raise Refusal("BadRequest.IllegalInput")
            model = body.get("model")
            if not model:
                raise Refusal("BadRequest.EmptyModel")
            inp = body.get("input")
            if not isinstance(inp, dict) or not inp:
                raise Refusal("BadRequest.EmptyInput")
            if model != ENROLLMENT_MODEL:
                raise Refusal("InvalidParameter", "Model not exist.")
            action = inp.get("action")
            if action not in ACTIONS:
                raise Refusal("InvalidParameter", f"Unsupported action: {action}")
            spec = await emu.inject(request, str(action))
            output = await self.actions[str(action)](request, inp, str(model), spec)
        except Refusal as exc:
            log.info("%s %s -> %s %s", rid, request.path, exc.status, exc.code)
            return refusal_reply(rid, exc)
        except Dropped:
            return dropped_reply()
        return reply(rid, 200, {"output": output, "usage": {"count": 1}, "request_id": rid})

    # -- the actions ------------------------------------------------------------------------------

    async def create_voice(self, request: web.Request, inp: dict[str, Any], model: str, spec: ActionFault) -> dict[str, Any]:
        target = inp.get("target_model")
        if not isinstance(target, str) or not target:
            raise Refusal("InvalidParameter", "Missing required parameter: target_model")
        if target not in TARGET_MODELS:
            raise Refusal("InvalidParameter", f"target_model {target} is not supported")
        prefix = self._prefix(inp.get("prefix"))
        url = _url(inp)
        store, s = self.emulator.store, self.emulator.settings
        if store.count() >= s.quota:
            raise Refusal("Throttling.AllocationQuota", f"您当前的配额为{s.quota}")
        outcome = await self.admit(request, url, model, spec)
        voice_id = f"{target}-{prefix}-{uuid.uuid4().hex}"
        if store.count() >= s.quota:  # re-check: judging awaited
            raise Refusal("Throttling.AllocationQuota", f"您当前的配额为{s.quota}")
        store.add(voice_id, prefix, target, url, self.emulator.clock.time() + s.deploy_delay_s, outcome)
        log.info("voice %s created (%s)", voice_id, outcome)
        return {"voice_id": voice_id}

    async def list_voice(self, request: web.Request, inp: dict[str, Any], model: str, spec: ActionFault) -> dict[str, Any]:
        prefix = inp.get("prefix")
        if prefix is not None and not isinstance(prefix, str):
            raise Refusal("InvalidParameter", "prefix must be a string")
        page_index = inp.get("page_index", 0)
        page_size = inp.get("page_size", 10)
        if not isinstance(page_index, int) or isinstance(page_index, bool) or page_index < 0:
            raise Refusal("InvalidParameter", "page_index must be a non-negative integer")
        if not isinstance(page_size, int) or isinstance(page_size, bool) or not 1 <= page_size <= PAGE_SIZE_MAX:
            raise Refusal("InvalidParameter", f"page_size must be an integer between 1 and {PAGE_SIZE_MAX}")
        voices = self.emulator.store.page(prefix or None, page_index, page_size)
        return {"voice_list": [v.list_item() for v in voices]}

    async def query_voice(self, request: web.Request, inp: dict[str, Any], model: str, spec: ActionFault) -> dict[str, Any]:
        voice = self.emulator.store.get(_voice_id(inp))
        if voice is None:
            raise Refusal("BadRequest.ResourceNotExist")
        return voice.query_output()

    async def update_voice(self, request: web.Request, inp: dict[str, Any], model: str, spec: ActionFault) -> dict[str, Any]:
        store = self.emulator.store
        vid = _voice_id(inp)
        if store.get(vid) is None:
            raise Refusal("BadRequest.ResourceNotExist")
        url = _url(inp)
        outcome = await self.admit(request, url, model, spec)
        if not store.redeploy(vid, url, self.emulator.clock.time() + self.emulator.settings.deploy_delay_s, outcome):
            raise Refusal("BadRequest.ResourceNotExist")
        return {}

    async def delete_voice(self, request: web.Request, inp: dict[str, Any], model: str, spec: ActionFault) -> dict[str, Any]:
        if not self.emulator.store.delete(_voice_id(inp)):
            raise Refusal("BadRequest.ResourceNotExist")
        return {}

    # -- admitting a clip ---------------------------------------------------------------------------

    async def admit(self, request: web.Request, url: str, model: str, spec: ActionFault) -> str:
        """Fetch and judge ``url``; raise the service's refusal, or return the later outcome (OK/UNDEPLOYED)."""
        emu = self.emulator
        s = emu.settings
        later_fail = bool(spec.undeploy_rate) and emu.rng.random() < spec.undeploy_rate
        rule = s.faults.for_url(url)
        if rule is not None:
            if rule.code == "OK":
                return "UNDEPLOYED" if later_fail else "OK"
            if rule.code == "UNDEPLOYED":
                return "UNDEPLOYED"
            raise Refusal(rule.code, rule.message)
        if url.lower().startswith("oss://"):
            path = await self.uploads.resolve(request, url, model)
        else:
            path = await emu.fetcher.fetch(url, s.max_fetch_mb * 1024 * 1024, s.fetch_timeout_s)
        try:
            verdict = await emu.judge_file(path)
        finally:
            path.unlink(missing_ok=True)
        if not verdict.ok:
            code = verdict.code or "InternalError"
            log.info("refused %s: %s: %s", url, code, verdict.message)
            if code in s.undeploy_codes:
                return "UNDEPLOYED"
            raise Refusal(code, MESSAGES.get(code, verdict.message))
        if any(w.get("code") in s.undeploy_warnings for w in verdict.warnings):
            return "UNDEPLOYED"
        return "UNDEPLOYED" if later_fail else "OK"

    def _prefix(self, prefix: Any) -> str:
        if not isinstance(prefix, str) or not prefix:
            raise Refusal("InvalidParameter", "Missing required parameter: prefix")
        if len(prefix) > PREFIX_MAX_CHARS:
            raise Refusal("InvalidParameter", f"prefix should not be longer than {PREFIX_MAX_CHARS} characters")
        strict = self.emulator.settings.strict_prefix
        if not re.fullmatch(r"[a-z0-9]+" if strict else r"[A-Za-z0-9_]+", prefix):
            what = "digits and lowercase letters" if strict else "digits, letters and underscores"
            raise Refusal("InvalidParameter", f"prefix should contain only {what}")
        return prefix


def _voice_id(inp: dict[str, Any]) -> str:
    vid = inp.get("voice_id")
    if not isinstance(vid, str) or not vid:
        raise Refusal("InvalidParameter", "Missing required parameter: voice_id")
    return vid


def _url(inp: dict[str, Any]) -> str:
    url = inp.get("url")
    if not isinstance(url, str) or not url:
        raise Refusal("InvalidParameter", "Missing required parameter: url")
    if urlsplit(url).scheme.lower() not in ("http", "https", "oss"):
        raise Refusal("InvalidParameter", "url must be an http(s) or oss:// URL")
    return url
