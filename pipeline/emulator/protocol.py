"""The service's wire facts: paths, models, codes and their messages and statuses, and the shapes of answers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web

CUSTOMIZATION_PATH = "/api/v1/services/audio/tts/customization"
UPLOADS_PATH = "/api/v1/uploads"
OSS_UPLOAD_PATH = "/emulator-oss/upload"
WS_PATH = "/api-ws/v1/inference"
ENROLLMENT_MODEL = "voice-enrollment"
OSS_BUCKET = "dashscope-instant"
RESOLVE_HEADER = "X-DashScope-OssResourceResolve"
DEFAULT_API_KEY = "sk-emulator"

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
SYSTEM_VOICES = ("longxiaochun", "longxiaochun_v2", "longxiaoxia_v2", "longwan", "longwan_v2", "longcheng_v2")
ACTIONS = ("create_voice", "list_voice", "query_voice", "update_voice", "delete_voice")
FAULT_SCOPES = (*ACTIONS, "get_policy", "upload", "synthesis")

# The service's own messages for its codes (reference §4.2), used verbatim.
MESSAGES: Mapping[str, str] = MappingProxyType({
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
})
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


class Refusal(Exception):
    """The emulator refuses a request: answered as ``{"request_id", "code", "message"}`` with the code's status."""

    def __init__(self, code: str, message: str | None = None, status: int | None = None) -> None:
        self.code = code
        self.message = message if message is not None else MESSAGES.get(code, code)
        self.status = status if status is not None else status_for(code)
        super().__init__(f"{code}: {self.message}")


class Dropped(Exception):
    """Fault injection closed the connection: nothing is answered."""


def request_id() -> str:
    """A request id as the API gateway gives it (a dashed UUID)."""
    return str(uuid.uuid4())


def reply(rid: str, status: int, body: dict[str, Any]) -> web.Response:
    """A JSON answer carrying ``rid`` in ``x-request-id``, non-ASCII kept as is."""
    return web.json_response(
        body,
        status=status,
        headers={"x-request-id": rid, "x-dashscope-call-gateway": "true"},
        dumps=lambda o: json.dumps(o, ensure_ascii=False),
    )


def refusal_reply(rid: str, exc: Refusal) -> web.Response:
    """The service's error body for ``exc``."""
    return reply(rid, exc.status, {"request_id": rid, "code": exc.code, "message": exc.message})


def dropped_reply() -> web.Response:
    """The answer to a dropped request; its transport is already aborted, so nothing reaches the client."""
    return web.Response(status=599)


def oss_error(rid: str, status: int, code: str, message: str) -> web.Response:
    """An error as OSS answers it: XML with the code, the message and the request id."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"<RequestId>{rid}</RequestId><HostId>emulator</HostId></Error>"
    )
    return web.Response(status=status, text=body, content_type="application/xml", headers={"x-oss-request-id": rid})
