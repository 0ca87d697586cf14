"""ServiceError: one exception for every failed call, with HTTP status, service code, message, request id."""

from __future__ import annotations

from typing import Any

from pipeline.errors import SERVICE_CODES, PipelineError

# Codes this client raises itself (no service answer behind them).
TIMEOUT = "RequestTimeout"  # the request timed out (it may or may not have reached the service)
CONNECTION = "ConnectionError"  # could not connect, or the connection dropped
UNKNOWN = "Unknown"  # an answer without a usable code (non-JSON body, missing fields), as the SDK says
NOT_READY = "VoiceNotReady"  # wait_until_ready gave up while the voice was still DEPLOYING
UNDEPLOYED = "VoiceUndeployed"  # the service's review refused the voice

THROTTLING = frozenset({"Throttling", "Throttling.RateQuota", "Throttling.BurstRate"})

HINTS: dict[str, str] = {
    "InvalidApiKey": "check DASHSCOPE_API_KEY, and that the key's region matches DASHSCOPE_HTTP_BASE_URL "
    "(Beijing keys on dashscope.aliyuncs.com, international keys on dashscope-intl.aliyuncs.com)",
    "NOT AUTHORIZED": "check the workspace id in DASHSCOPE_HTTP_BASE_URL / DASHSCOPE_WORKSPACE",
    "AccessDenied": "authorise the model for this workspace in the console, or use the default workspace's key",
    "Model.AccessDenied": "authorise the model for this workspace in the console, or use the default workspace's key",
    "Throttling.AllocationQuota": "the account holds the maximum of 1000 voices; delete unused ones "
    "(`voiceprep voices list`, then `voiceprep voices delete VOICE_ID`)",
    "BadRequest.ResourceNotExist": "no such voice in this account and region; `voiceprep voices list` shows them",
    "BadRequest.InputDownloadFailed": "the service could not download the audio; use `upload: dashscope`, "
    "or make sure the URL is a public direct download",
    "InvalidParameter": "check the prefix (1-10 lowercase letters or digits) and the target model",
    "BadRequest.EmptyInput": "the request was malformed; please report this as a voiceprep bug",
    "BadRequest.EmptyModel": "the request was malformed; please report this as a voiceprep bug",
    "BadRequest.IllegalInput": "the request was malformed; please report this as a voiceprep bug",
    "ModelUnavailable": "the service is overloaded; try again in a few minutes",
    "ModelServingError": "the service is overloaded; try again in a few minutes",
    "InternalError": "a service-side failure; voiceprep retries safely. If it persists, the audio may be too long, "
    "noisy or fluctuating: `voiceprep run` cuts the best 10-20 s",
    TIMEOUT: "the service did not answer in time; check the network, or raise enroll.request_timeout_s",
    CONNECTION: "could not reach the service; check the network and DASHSCOPE_HTTP_BASE_URL",
    NOT_READY: "the service is still reviewing the voice; check later with `voiceprep voices show VOICE_ID`",
    UNDEPLOYED: "the service's review refused the audio (too short, noisy or unsupported); "
    "record a clean 10-20 s clip and enroll it again",
}
for _code in THROTTLING:
    HINTS[_code] = "too many requests; voiceprep backs off and retries; lower enroll.rate_limit_per_s"


def hint_for(code: str) -> str:
    if code in HINTS:
        return HINTS[code]
    if code in SERVICE_CODES:
        return SERVICE_CODES[code][1]
    return ""


class ServiceError(PipelineError):
    """A failed service call: ``http_status`` (None when no answer came), ``code`` (the service's own,
    or one of this module's), ``message``, ``request_id`` and ``action``.

    ``ambiguous`` is True when the request may have been carried out even though it failed (a timeout
    after sending, a dropped connection, a 5xx): a create must then be reconciled, never blindly retried.
    ``retryable`` is True for transport errors, 429 and 5xx.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        http_status: int | None = None,
        request_id: str | None = None,
        action: str | None = None,
        hint: str | None = None,
        ambiguous: bool = False,
        retryable: bool | None = None,
        retry_after_s: float | None = None,
        source: str | None = None,
    ) -> None:
        self.request_id = request_id
        self.action = action
        self.ambiguous = ambiguous
        self.retry_after_s = retry_after_s
        if retryable is None:
            retryable = http_status is not None and (http_status == 429 or http_status >= 500 or code in THROTTLING)
        self.retryable = retryable
        super().__init__(
            code,
            message,
            hint=hint_for(code) if hint is None else hint,
            http_status=http_status,
            source=source,
            stage="enroll",
        )

    @property
    def status(self) -> int | None:
        return self.http_status

    def line(self) -> str:
        head = f"{self.source}: " if self.source else ""
        where = []
        if self.action:
            where.append(self.action)
        if self.http_status is not None:
            where.append(f"HTTP {self.http_status}")
        if self.request_id:
            where.append(f"request {self.request_id}")
        facts = f" [{', '.join(where)}]" if where else ""
        tail = f" ({self.hint})" if self.hint else ""
        return f"{head}{self.code}: {self.message}{facts}{tail}"

    def __repr__(self) -> str:
        return (
            f"ServiceError(code={self.code!r}, message={self.message!r}, http_status={self.http_status!r}, "
            f"request_id={self.request_id!r}, action={self.action!r})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "http_status": self.http_status,
            "request_id": self.request_id,
            "action": self.action,
        }

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (self.code, self.message, self.http_status, self.request_id, self.action, self.hint, self.ambiguous,
             self.retryable, self.retry_after_s, self.source),
        )


def _rebuild(
    code: str,
    message: str,
    http_status: int | None,
    request_id: str | None,
    action: str | None,
    hint: str,
    ambiguous: bool,
    retryable: bool,
    retry_after_s: float | None,
    source: str | None,
) -> ServiceError:
    return ServiceError(
        code, message, http_status=http_status, request_id=request_id, action=action, hint=hint,
        ambiguous=ambiguous, retryable=retryable, retry_after_s=retry_after_s, source=source,
    )
