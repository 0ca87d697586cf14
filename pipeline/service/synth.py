"""A minimal client of the synthesis WebSocket: one task, PCM audio back, to verify an enrolled voice."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field

DEFAULT_WS_URL = "wss://dashscope.aliyuncs.com/api-ws/v1/inference"


class SynthesisError(Exception):
    """The service refused the task (``task-failed``) or the connection failed; ``code`` is the service's."""

    def __init__(self, code: str, message: str, task_id: str = "") -> None:
        self.code = code
        self.message = message
        self.task_id = task_id
        super().__init__(f"{code}: {message}")


@dataclass(frozen=True)
class SynthesisResult:
    """16-bit little-endian mono PCM at ``sample_rate``, and the billed characters."""

    pcm: bytes
    sample_rate: int
    characters: int
    task_id: str
    events: list[str] = field(default_factory=list)


def model_for_voice(voice: str) -> str | None:
    """The target model encoded in a cloned voice id ``{target_model}-{prefix}-{hex}``, or None."""
    parts = voice.rsplit("-", 2)
    if len(parts) == 3 and all(parts) and parts[0].startswith(("cosyvoice-", "qwen-")):
        return parts[0]
    return None


async def synthesize(
    text: str,
    *,
    voice: str,
    model: str,
    api_key: str,
    url: str = DEFAULT_WS_URL,
    sample_rate: int = 24000,
    timeout_s: float = 60.0,
) -> SynthesisResult:
    """Run one duplex task (run-task, continue-task, finish-task) and collect the PCM audio."""
    import aiohttp

    task_id = uuid.uuid4().hex
    common = {"model": model, "task_group": "audio", "task": "tts", "function": "SpeechSynthesizer"}

    def message(action: str, payload: dict[str, object]) -> str:
        return json.dumps({"header": {"action": action, "task_id": task_id, "streaming": "duplex"}, "payload": payload})

    run = message("run-task", {**common, "input": {}, "parameters": {
        "voice": voice, "volume": 50, "text_type": "PlainText", "sample_rate": sample_rate,
        "rate": 1.0, "format": "pcm", "pitch": 1.0, "seed": 0, "type": 0}})
    audio = bytearray()
    events: list[str] = []
    characters = 0
    headers = {"Authorization": f"Bearer {api_key}"}
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.ws_connect(url, headers=headers) as ws:
            await ws.send_str(run)
            started = False
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    audio.extend(msg.data)
                    continue
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(msg.data)
                header = data.get("header", {})
                event = header.get("event")
                events.append(str(event))
                if event == "task-started" and not started:
                    started = True
                    await ws.send_str(message("continue-task", {**common, "input": {"text": text}}))
                    await ws.send_str(message("finish-task", {"input": {}}))
                elif event == "task-failed":
                    raise SynthesisError(
                        str(header.get("error_code")), str(header.get("error_message")), str(header.get("task_id", ""))
                    )
                elif event == "task-finished":
                    usage = (data.get("payload") or {}).get("usage") or {}
                    characters = int(usage.get("characters", 0))
                    return SynthesisResult(bytes(audio), sample_rate, characters, task_id, events)
    except aiohttp.WSServerHandshakeError as exc:
        code = "InvalidApiKey" if exc.status == 401 else f"HTTP{exc.status}"
        raise SynthesisError(code, f"handshake refused with HTTP {exc.status}") from None
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise SynthesisError("ConnectionError", f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
    raise SynthesisError("ConnectionError", "the connection closed before task-finished", task_id)
