"""The enrollment client (httpx): the SDK's VoiceEnrollmentService operations, paced and safely retried."""

from __future__ import annotations

import datetime
import email.utils
import json
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from pipeline import __version__

from . import errors as E
from .errors import ServiceError
from .ratelimit import Backoff, Limiter, TokenBucket
from .settings import ENROLLMENT_MODEL, PREFIX_RE, ApiKey, ServiceSettings

log = logging.getLogger("voiceprep.service")

CUSTOMIZATION_PATH = "/services/audio/tts/customization"
UPLOADS_PATH = "/uploads"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_RETRIES = 3
READY = "OK"
DEPLOYING = "DEPLOYING"
REFUSED = "UNDEPLOYED"


@dataclass(frozen=True)
class Reply:
    """A successful answer: ``output`` (``data`` for getPolicy), ``usage`` and the ``request_id``."""

    output: dict[str, Any]
    request_id: str | None
    usage: dict[str, Any] = field(default_factory=dict)


def _seconds(text: str, scale: float = 1.0) -> float | None:
    try:
        value = float(text) * scale
    except ValueError:
        return None
    return max(value, 0.0) if math.isfinite(value) else None


def _retry_after(resp: httpx.Response) -> float | None:
    """The server's ``retry-after-ms`` / ``Retry-After`` (seconds or an HTTP date) in seconds; None when
    absent or unparsable (the caller then uses its own backoff)."""
    ms = resp.headers.get("retry-after-ms")
    if ms:
        value = _seconds(ms, 0.001)
        if value is not None:
            return value
    ra = resp.headers.get("retry-after")
    if not ra:
        return None
    value = _seconds(ra)
    if value is not None:
        return value
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # an RFC 850 date without a zone is GMT
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(when.timestamp() - time.time(), 0.0)


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _printable(text: str) -> str:
    """One line: control characters (newlines, terminal escapes) shown as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text)


# httpx logs the server's reason phrase, httpcore's debug trace the raw response headers
HTTP_LOGGERS = ("httpx", "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy", "httpcore.socks")


class _ScrubKey(logging.Filter):
    """Takes the key out of the HTTP libraries' log lines."""

    def __init__(self, key: ApiKey) -> None:
        super().__init__()
        self.key = key

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = self.key.scrub(text)
        if clean != text:
            record.msg, record.args = clean, ()
        return True


class EnrollmentClient:
    """The operations of the SDK's ``VoiceEnrollmentService`` over httpx, plus ``wait_until_ready``.

    Requests are the SDK 1.x bodies byte for byte (``{"model": "voice-enrollment", "parameters": {},
    "input": {"action": ...}}``) with ``Authorization: Bearer`` and JSON headers. Every failure raises
    :class:`ServiceError` (a 200 whose body carries a ``code`` too). Requests are paced by a token
    bucket; transport errors, 429 and 5xx are retried with jittered backoff, except that an
    ambiguous failure of ``create_voice`` is raised, never retried (see ``pipeline.service.enroll``).

    ``transport`` is any httpx transport (``httpx.MockTransport`` in tests); ``sleep``, ``clock`` and
    ``rng`` are injectable so that tests never wait.
    """

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout_s: float | None = None,
        max_retries: int | None = None,
        rate_limit_per_s: float = 10.0,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        if timeout_s is None:
            timeout_s = settings.timeout_s if settings.timeout_s is not None else DEFAULT_TIMEOUT_S
        if max_retries is None:
            max_retries = settings.max_retries if settings.max_retries is not None else DEFAULT_MAX_RETRIES
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff = backoff or Backoff()
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self.limiter: Limiter = TokenBucket(rate_limit_per_s, clock=clock, sleep=sleep)  # or a shared one
        self._http = httpx.Client(transport=transport, timeout=httpx.Timeout(timeout_s), follow_redirects=False)
        self.last_request_id: str | None = None
        self.user_agent = f"voiceprep/{__version__} httpx/{httpx.__version__}"
        self._log_filter = _ScrubKey(settings.api_key)
        for name in HTTP_LOGGERS:
            logging.getLogger(name).addFilter(self._log_filter)

    def __repr__(self) -> str:
        ws = f", workspace={self.settings.workspace!r}" if self.settings.workspace else ""
        return f"EnrollmentClient(base_url={self.settings.base_url!r}{ws})"

    def close(self) -> None:
        self._http.close()
        for name in HTTP_LOGGERS:
            logging.getLogger(name).removeFilter(self._log_filter)

    def __enter__(self) -> EnrollmentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the SDK's operations -------------------------------------------------------------------

    def create_voice(
        self,
        target_model: str,
        prefix: str,
        url: str,
        language_hints: list[str] | None = None,
        max_prompt_audio_length: float | None = None,
        **kwargs: Any,
    ) -> str:
        """Create a voice from the audio at ``url``; returns its ``voice_id`` (status DEPLOYING).

        Optional fields are sent only when not None, in the SDK's order; other keyword arguments
        (``enable_preprocess=True``...) go into ``input`` as the SDK does. Never retried on an
        ambiguous failure: the error says ``ambiguous=True`` and the caller must reconcile.
        """
        if not isinstance(prefix, str) or not PREFIX_RE.match(prefix):
            raise ServiceError(
                "InvalidParameter",
                f"prefix {prefix!r} must be 1-10 lowercase letters or digits (checked before any call)",
                action="create_voice",
            )
        inp: dict[str, Any] = {"action": "create_voice", "target_model": target_model, "prefix": prefix, "url": url}
        if language_hints is not None:
            inp["language_hints"] = list(language_hints)
        if max_prompt_audio_length is not None:
            inp["max_prompt_audio_length"] = max_prompt_audio_length
        inp.update({k: v for k, v in kwargs.items() if v is not None})
        reply = self._call(inp, idempotent=False)
        voice_id = reply.output.get("voice_id")
        if not isinstance(voice_id, str) or not voice_id:
            raise ServiceError(
                E.UNKNOWN, "create_voice answered without output.voice_id", http_status=200,
                request_id=reply.request_id, action="create_voice", ambiguous=True, retryable=False,
            )
        return voice_id

    def list_voices(self, prefix: str | None = None, page_index: int = 0, page_size: int = 10) -> list[dict[str, Any]]:
        """One page of voices (``voice_id``, ``gmt_create``, ``gmt_modified``, ``status``); 0-based pages."""
        inp: dict[str, Any] = {"action": "list_voice"}
        if prefix:
            inp["prefix"] = prefix
        inp["page_index"] = page_index
        inp["page_size"] = page_size
        reply = self._call(inp, idempotent=True)
        voices = reply.output.get("voice_list")
        if voices is None:
            return []
        if not isinstance(voices, list):
            raise ServiceError(E.UNKNOWN, "list_voice answered a voice_list that is not a list", http_status=200,
                               request_id=reply.request_id, action="list_voice", retryable=False)
        return [v for v in voices if isinstance(v, dict)]

    def iter_voices(self, prefix: str | None = None, page_size: int = 100, max_pages: int = 1000) -> Iterator[dict[str, Any]]:
        """Every voice (with ``prefix``), page after page until an empty or repeated page.

        The service publishes no maximum page size: a page shorter than asked is either the last one
        or a capped one, so paging goes on at that size from where it stopped (overlaps are dropped).
        """
        seen: set[str] = set()
        size, page = page_size, 0
        for _ in range(max_pages):
            voices = self.list_voices(prefix, page_index=page, page_size=size)
            fresh = [v for v in voices if str(v.get("voice_id")) not in seen]
            if not fresh:
                return
            for v in fresh:
                seen.add(str(v.get("voice_id")))
                yield v
            if len(voices) < size:
                size = len(voices)
                page = len(seen) // size
            else:
                page += 1

    def count_voices(self, prefix: str | None = None) -> int:
        return sum(1 for _ in self.iter_voices(prefix))

    def query_voice(self, voice_id: str) -> dict[str, Any]:
        """The voice's ``status``, ``resource_link``, ``target_model``, ``gmt_create``, ``gmt_modified``."""
        return self._call({"action": "query_voice", "voice_id": voice_id}, idempotent=True).output

    def update_voice(self, voice_id: str, url: str, **kwargs: Any) -> None:
        """Replace the voice's audio; the voice goes back to DEPLOYING."""
        inp: dict[str, Any] = {"action": "update_voice", "voice_id": voice_id, "url": url}
        inp.update({k: v for k, v in kwargs.items() if v is not None})
        self._call(inp, idempotent=True)

    def delete_voice(self, voice_id: str) -> None:
        """Delete the voice. A retry that finds it gone (``BadRequest.ResourceNotExist``) counts as done."""
        self._call({"action": "delete_voice", "voice_id": voice_id}, idempotent=True, gone_ok_on_retry=True)

    def wait_until_ready(
        self,
        voice_id: str,
        *,
        timeout_s: float = 600.0,
        poll_interval_s: float = 5.0,
        max_interval_s: float = 30.0,
    ) -> dict[str, Any]:
        """Poll ``query_voice`` while DEPLOYING; returns the final answer, whose status is OK or UNDEPLOYED.

        The interval starts at ``poll_interval_s`` and grows by half each poll up to ``max_interval_s``.
        Raises ``VoiceNotReady`` after ``timeout_s``, and ``Unknown`` on any other status.
        """
        deadline = self._clock() + timeout_s
        interval = poll_interval_s
        while True:
            info = self.query_voice(voice_id)
            status = info.get("status")
            if status in (READY, REFUSED):
                return info
            if status != DEPLOYING:
                raise ServiceError(E.UNKNOWN, f"voice {voice_id} has an unexpected status {status!r}",
                                   action="query_voice", request_id=self.last_request_id, retryable=False)
            left = deadline - self._clock()
            if left <= 0:
                raise ServiceError(E.NOT_READY, f"voice {voice_id} is still DEPLOYING after {timeout_s:.0f} s",
                                   action="query_voice", request_id=self.last_request_id, retryable=False)
            self._sleep(min(interval, left))
            interval = min(interval * 1.5, max_interval_s)

    # --- temporary storage (getPolicy + form upload) -----------------------------------------------

    def get_upload_policy(self, model: str = ENROLLMENT_MODEL) -> dict[str, Any]:
        """``GET {base}/uploads?action=getPolicy&model=...``: the form policy (its ``data`` object)."""
        url = f"{self.settings.base_url}{UPLOADS_PATH}"
        req = self._http.build_request(
            "GET", url, params={"action": "getPolicy", "model": model}, headers=self._headers(json_body=False)
        )
        reply = self._send(req, action="getPolicy", idempotent=True, payload_key="data")
        need = ("upload_host", "upload_dir", "policy", "signature", "oss_access_key_id")
        missing = [k for k in need if not reply.output.get(k)]
        if missing:
            raise ServiceError(E.UNKNOWN, f"getPolicy answered without {', '.join(missing)}", http_status=200,
                               request_id=reply.request_id, action="getPolicy", retryable=False)
        return reply.output

    def upload_temporary(
        self, data: bytes, filename: str, *, model: str = ENROLLMENT_MODEL, content_type: str = "audio/x-wav"
    ) -> str:
        """Upload bytes to the service's temporary storage (48 h); returns the ``oss://`` URL.

        The form is the SDK's, field for field, the file last; no Authorization header goes to the
        storage host. A failed upload is retried with a fresh policy.
        """
        attempt = 0
        while True:
            attempt += 1
            policy = self.get_upload_policy(model)
            key = f"{str(policy['upload_dir']).rstrip('/')}/{filename}"
            form = {
                "OSSAccessKeyId": str(policy["oss_access_key_id"]),
                "Signature": str(policy["signature"]),
                "policy": str(policy["policy"]),
                "key": key,
                "x-oss-object-acl": str(policy.get("x_oss_object_acl", "private")),
                "x-oss-forbid-overwrite": str(policy.get("x_oss_forbid_overwrite", "true")),
                "success_action_status": "200",
                "x-oss-content-type": content_type,
            }
            headers = {
                "User-Agent": self.user_agent,
                "Accept": "application/json",
                "Date": email.utils.formatdate(usegmt=True),
            }
            try:
                self.limiter.acquire()
                resp = self._http.post(
                    str(policy["upload_host"]), data=form,
                    files={"file": (filename, data, "application/octet-stream")}, headers=headers,
                )
            except httpx.RequestError as exc:  # transport errors, and an answer that cannot be decoded
                err = self._transport_error(exc, "upload")
            else:
                if resp.status_code in (200, 204):
                    return f"oss://{key}"
                err = self._storage_error(resp)
            if not err.retryable or attempt > self.max_retries:
                raise err
            self._sleep(self.backoff.delay(attempt, err.retry_after_s, self._rng))

    # --- plumbing ---------------------------------------------------------------------------------

    def _headers(self, *, json_body: bool = True, oss_resolve: bool = False) -> dict[str, str]:
        h = {
            "User-Agent": self.user_agent,
            "Accept": "application/json; charset=utf-8",
            "Authorization": f"Bearer {self.settings.api_key.reveal()}",
        }
        if json_body:
            h["Content-Type"] = "application/json; charset=utf-8"
        if self.settings.workspace:
            h["X-DashScope-WorkSpace"] = self.settings.workspace
        if oss_resolve:
            h["X-DashScope-OssResourceResolve"] = "enable"
        return h

    def _call(self, inp: dict[str, Any], *, idempotent: bool, gone_ok_on_retry: bool = False) -> Reply:
        body = {"model": ENROLLMENT_MODEL, "parameters": {}, "input": inp}
        content = json.dumps(body, ensure_ascii=False).encode("utf-8")
        oss = any(isinstance(v, str) and v.startswith("oss://") for v in inp.values())
        req = self._http.build_request(
            "POST", f"{self.settings.base_url}{CUSTOMIZATION_PATH}", content=content,
            headers=self._headers(oss_resolve=oss),
        )
        return self._send(req, action=str(inp["action"]), idempotent=idempotent, gone_ok_on_retry=gone_ok_on_retry)

    def _send(
        self, req: httpx.Request, *, action: str, idempotent: bool, payload_key: str = "output",
        gone_ok_on_retry: bool = False,
    ) -> Reply:
        attempt = 0
        while True:
            attempt += 1
            self.limiter.acquire()
            try:
                resp = self._http.send(req)
            except httpx.RequestError as exc:
                err = self._transport_error(exc, action)
            else:
                try:
                    reply = self._parse(resp, action, payload_key)
                except ServiceError as exc:
                    err = exc
                    self.last_request_id = exc.request_id or self.last_request_id
                else:
                    self.last_request_id = reply.request_id
                    log.debug("%s ok [request %s]", action, reply.request_id)
                    return reply
            if gone_ok_on_retry and attempt > 1 and err.code == "BadRequest.ResourceNotExist":
                return Reply(output={}, request_id=err.request_id)
            log.info("%s failed (attempt %d): %s", action, attempt, err.line())
            if not err.retryable or attempt > self.max_retries or (err.ambiguous and not idempotent):
                raise err
            self._sleep(self.backoff.delay(attempt, err.retry_after_s, self._rng))

    def _transport_error(self, exc: httpx.RequestError, action: str) -> ServiceError:
        # Connect errors and pool timeouts happen before the request leaves: nothing can have been done.
        sent = not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
        host = exc.request.url.host if _has_request(exc) else "the service"
        detail = _snippet(self._line(str(exc)), 120)
        if isinstance(exc, httpx.TimeoutException):
            code, what = E.TIMEOUT, f"no answer from {host} in time ({type(exc).__name__})"
        elif isinstance(exc, httpx.DecodingError):
            code, what = E.UNKNOWN, f"the answer from {host} could not be decoded ({detail})"
        else:
            code, what = E.CONNECTION, f"connection to {host} failed ({type(exc).__name__}: {detail})"
        return ServiceError(code, self._redact(what), action=action, ambiguous=sent, retryable=True)

    def _parse(self, resp: httpx.Response, action: str, payload_key: str) -> Reply:
        """The answer as a Reply, or a ServiceError. Whatever comes from the server (headers, body,
        reason phrase) has the key scrubbed out of it; what goes into a one-line error is printable."""
        status = resp.status_code
        header_rid = self._rid(resp.headers.get("x-request-id"))
        try:
            raw = resp.json() if resp.content else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raw = None
        body: dict[str, Any] = self._clean(raw) if isinstance(raw, dict) else {}
        reason = self._line(resp.reason_phrase)
        retry_after = _retry_after(resp) if status == 429 or status >= 500 else None
        if not isinstance(raw, dict):
            text = _snippet(self._line(resp.text)) if resp.content else "(empty body)"
            if 200 <= status < 300:
                raise ServiceError(
                    E.UNKNOWN, f"HTTP {status} with a body that is not a JSON object: {text!r}",
                    http_status=status, request_id=header_rid, action=action, ambiguous=True, retryable=False,
                )
            kind = self._line(resp.headers.get("content-type", "no content type").split(";")[0])
            hint = "check DASHSCOPE_HTTP_BASE_URL (it should end in /api/v1)" if status in (404, 405) else None
            raise ServiceError(
                E.UNKNOWN, f"HTTP {status} {reason} with a non-JSON body ({_snippet(kind, 60)}): {text}",
                http_status=status, request_id=header_rid, action=action, hint=hint,
                ambiguous=status >= 500, retry_after_s=retry_after,
            )
        rid = self._rid(body.get("request_id")) or header_rid
        code = body.get("code")
        if status >= 300 or code:
            code_s = _snippet(self._line(str(code)), 100) if code else ("Throttling" if status == 429 else E.UNKNOWN)
            message = body.get("message") or body.get("msg") or f"HTTP {status} {reason}"
            raise ServiceError(
                code_s, _snippet(self._line(str(message)), 500), http_status=status, request_id=rid, action=action,
                ambiguous=status >= 500, retry_after_s=retry_after,
                retryable=None if status >= 300 else code_s in E.THROTTLING,
            )
        payload = body.get(payload_key)
        if payload is None and payload_key == "output" and action in ("update_voice", "delete_voice"):
            payload = {}
        if not isinstance(payload, dict):
            raise ServiceError(E.UNKNOWN, f"HTTP {status} without a `{payload_key}` object", http_status=status,
                               request_id=rid, action=action, ambiguous=True, retryable=False)
        usage = body.get("usage")
        return Reply(output=payload, request_id=rid, usage=usage if isinstance(usage, dict) else {})

    def _storage_error(self, resp: httpx.Response) -> ServiceError:
        text = self._line(resp.text) if resp.content else ""
        m = re.search(r"<Code>([^<]+)</Code>", text)
        msg = re.search(r"<Message>([^<]+)</Message>", text)
        code = _snippet(m.group(1), 100) if m else E.UNKNOWN
        message = _snippet(msg.group(1), 500) if msg else (
            f"HTTP {resp.status_code} from the storage host: {_snippet(text) or '(empty)'}")
        rid = re.search(r"<RequestId>([^<]+)</RequestId>", text)
        return ServiceError(
            code, message, http_status=resp.status_code,
            request_id=self._rid(rid.group(1) if rid else resp.headers.get("x-oss-request-id")), action="upload",
            hint="the upload policy expired or was refused; voiceprep fetches a new one and retries"
            if resp.status_code == 403 else None,
            retry_after_s=_retry_after(resp),
            retryable=resp.status_code in (403, 408, 429) or resp.status_code >= 500,
        )

    def _redact(self, text: str) -> str:
        return self.settings.api_key.scrub(text)

    def _line(self, text: str) -> str:
        """Server text for a one-line message: the key scrubbed, control characters escaped."""
        return _printable(" ".join(self._redact(text).split()))

    def _rid(self, value: Any) -> str | None:
        """A request id as it may be printed and stored: scrubbed, printable, at most 200 characters."""
        if value is None or value == "":
            return None
        return _snippet(self._line(str(value)), 200) or None

    def _clean(self, value: Any) -> Any:
        """A decoded JSON answer with the key scrubbed out of every string (keys and values)."""
        if isinstance(value, str):
            return self._redact(value)
        if isinstance(value, dict):
            return {self._redact(str(k)): self._clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._clean(v) for v in value]
        return value


def _has_request(exc: httpx.RequestError) -> bool:
    try:
        exc.request  # noqa: B018 - raises RuntimeError when the exception carries no request
    except RuntimeError:
        return False
    return True
