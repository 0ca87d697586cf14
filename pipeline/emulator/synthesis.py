"""The synthesis WebSocket (``/api-ws/v1/inference``): the duplex TTS protocol, answered with synthetic audio."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import re
import struct
from typing import Any

import av
import numpy as np
from aiohttp import WSMessage, WSMsgType, web

from .core import Emulator
from .protocol import TARGET_MODELS, Dropped, Refusal, refusal_reply, request_id

log = logging.getLogger("voiceprep.emulator")

SENTENCE_END = re.compile(r"[。！？；!?;\n]|\.(?=\s|$)")
FORMATS = ("pcm", "wav", "mp3", "opus")
SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
DEFAULT_FORMAT, DEFAULT_RATE = "mp3", 22050


def split_sentences(text: str) -> tuple[list[str], str]:
    """Complete sentences (with their punctuation) and the unfinished rest."""
    out: list[str] = []
    start = 0
    for m in SENTENCE_END.finditer(text):
        out.append(text[start : m.end()])
        start = m.end()
    return out, text[start:]


def billed_characters(text: str) -> int:
    """Characters as the service bills them: CJK count 2, SSML tags are not counted."""
    plain = re.sub(r"<[^>]*>", "", text)
    return sum(2 if _is_cjk(ch) else 1 for ch in plain)


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return 0x3040 <= o <= 0x30FF or 0x3400 <= o <= 0x4DBF or 0x4E00 <= o <= 0x9FFF or 0xAC00 <= o <= 0xD7AF


def synthetic_voice(voice: str, text: str, sample_rate: int) -> np.ndarray:
    """Deterministic float32 mono audio for ``text`` in ``voice``: one voiced syllable per character.

    A harmonic tone whose pitch comes from the voice id, not speech.
    """
    digest = hashlib.sha256(voice.encode()).digest()
    f0 = 100.0 + digest[0] % 120
    plain = re.sub(r"<[^>]*>", "", text)
    pieces: list[np.ndarray] = []
    for i, ch in enumerate(plain):
        if ch.isspace() or not ch.isalnum():
            pieces.append(np.zeros(int(0.08 * sample_rate), dtype=np.float32))
            continue
        dur = 0.18 if _is_cjk(ch) else 0.07
        n = int(dur * sample_rate)
        t = np.arange(n, dtype=np.float32) / sample_rate
        pitch = f0 * (1.0 + 0.06 * np.sin(2 * np.pi * (i % 7) / 7.0))
        tone = sum(np.sin(2 * np.pi * pitch * k * t) / k for k in range(1, 6))
        env = np.sin(np.pi * np.arange(n, dtype=np.float32) / max(n - 1, 1)) ** 2
        pieces.append((0.25 * tone * env).astype(np.float32))
    if not pieces:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(pieces)


def encode(samples: np.ndarray, sample_rate: int, fmt: str, first: bool) -> bytes:
    """``samples`` as ``fmt`` bytes: pcm s16le; wav (header only on the first chunk); mp3/opus via PyAV."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    if fmt == "pcm":
        return pcm.tobytes()
    if fmt == "wav":
        head = b""
        if first:  # streamed WAV: the sizes are unknown, so they carry the streaming marker 0xFFFFFFFF
            head = (
                b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt "
                + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
                + b"data" + struct.pack("<I", 0xFFFFFFFF)
            )
        return head + pcm.tobytes()
    return _encode_av(samples, sample_rate, fmt)


def _encode_av(samples: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    container, codec = ("mp3", "libmp3lame") if fmt == "mp3" else ("ogg", "libopus")
    rate = sample_rate if fmt == "mp3" or sample_rate in (8000, 12000, 16000, 24000, 48000) else 48000
    with av.open(buf, "w", format=container) as out:
        stream: Any = out.add_stream(codec, rate=rate, layout="mono")
        fmt_name = stream.codec_context.codec.audio_formats[0].name
        resampler = av.AudioResampler(format=fmt_name, layout="mono", rate=rate)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[None, :]), format="fltp", layout="mono")
        frame.sample_rate = sample_rate
        for f in [*resampler.resample(frame), *resampler.resample(None)]:
            for pkt in stream.encode(f):
                out.mux(pkt)
        for pkt in stream.encode(None):
            out.mux(pkt)
    return buf.getvalue()


class _Task:
    def __init__(self, task_id: str, model: str, voice: str, fmt: str, rate: int) -> None:
        self.task_id = task_id
        self.model = model
        self.voice = voice
        self.fmt = fmt
        self.rate = rate
        self.pending = ""
        self.index = 0
        self.characters = 0
        self.sent_audio = False


class SynthesisHandler:
    """One WebSocket connection: run-task, continue-task*, finish-task; tasks may follow each other.

    Sentences are cut at sentence punctuation; the rest of the text waits for more text, a
    ``flush`` or ``finish-task``. A client silent for ``idle_timeout_s`` on the emulator's clock
    gets its task failed and the connection closed.
    """

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    async def handle(self, request: web.Request) -> web.StreamResponse:
        rid = request_id()
        try:
            self.emulator.account(request)
        except Refusal as exc:
            return refusal_reply(rid, exc)
        ws = web.WebSocketResponse(max_msg_size=4 * 1024 * 1024)
        clock = self.emulator.clock
        last = clock.time()  # before the handshake's answer: the client cannot be idle earlier
        await ws.prepare(request)
        task: _Task | None = None
        try:
            while not ws.closed:
                msg = await self._receive_until(ws, last + self.emulator.settings.idle_timeout_s)
                if msg is None:
                    if task is not None:
                        await self._failed(ws, task.task_id, "InvalidParameter", "request timeout after 23 seconds.")
                    await ws.close()
                    break
                last = clock.time()
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                if msg.type != WSMsgType.TEXT:
                    await self._failed(ws, task.task_id if task else "", "InvalidParameter", "binary frames are not accepted")
                    continue
                task, keep_open = await self._on_message(ws, request, task, msg.data)
                if not keep_open:
                    with contextlib.suppress(ConnectionError):
                        await ws.close()
                    break
        except ConnectionResetError:
            pass
        return ws

    async def _receive_until(self, ws: web.WebSocketResponse, deadline: float) -> WSMessage | None:
        """The next message, or None once the emulator's clock reaches ``deadline`` (the idle timeout,
        counted from the client's last message) with none."""
        receiving = asyncio.ensure_future(ws.receive())
        idle = asyncio.ensure_future(self.emulator.clock.wait_until(deadline))
        try:
            await asyncio.wait((receiving, idle), return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()
            receiving.cancel()  # nothing when it has its message
            with contextlib.suppress(asyncio.CancelledError):
                await receiving  # a cancelled receive must end before the socket is written or closed
        return None if receiving.cancelled() else receiving.result()

    async def _on_message(
        self, ws: web.WebSocketResponse, request: web.Request, task: _Task | None, data: str
    ) -> tuple[_Task | None, bool]:
        try:
            msg = json.loads(data)
            header = msg["header"]
            action = header["action"]
            task_id = str(header.get("task_id") or "")
            payload = msg.get("payload")
        except (json.JSONDecodeError, KeyError, TypeError):
            await self._failed(ws, task.task_id if task else "", "InvalidParameter", "invalid message format")
            return None, False
        if action == "run-task":
            if task is not None:
                await self._failed(ws, task_id, "InvalidParameter", "a task is already running on this connection")
                return None, False
            return await self._run(ws, request, task_id, payload)
        if task is None or task_id != task.task_id:
            await self._failed(ws, task_id, "InvalidParameter", "task can not be null")
            return None, False
        inp = payload.get("input") if isinstance(payload, dict) else None
        if not isinstance(inp, dict):
            await self._failed(ws, task_id, "InvalidParameter", "task can not be null")
            return None, False
        if action == "continue-task":
            if inp.get("flush"):
                await self._speak(ws, task, flush=True)
                return task, True
            text = inp.get("text")
            if not isinstance(text, str):
                await self._failed(ws, task_id, "InvalidParameter", "task can not be null")
                return None, False
            task.pending += text
            await self._speak(ws, task, flush=False)
            return task, True
        if action == "finish-task":
            if inp.get("directive") != "cancel":
                await self._speak(ws, task, flush=True)
            await self._event(ws, task_id, "task-finished", {"output": {}, "usage": {"characters": task.characters}})
            return None, True
        await self._failed(ws, task_id, "InvalidParameter", f"unsupported action: {action}")
        return None, False

    async def _run(
        self, ws: web.WebSocketResponse, request: web.Request, task_id: str, payload: Any
    ) -> tuple[_Task | None, bool]:
        if not task_id or not isinstance(payload, dict) or not isinstance(payload.get("input"), dict):
            await self._failed(ws, task_id, "InvalidParameter", "task can not be null")
            return None, False
        try:
            await self.emulator.inject(request, "synthesis")
        except Refusal as exc:
            await self._failed(ws, task_id, exc.code, "Internal server error!" if exc.code == "InternalError" else exc.message)
            return None, False
        except Dropped:  # the transport is aborted: the client sees the connection drop
            return None, False
        model = payload.get("model")
        raw_params = payload.get("parameters")
        params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
        voice = params.get("voice")
        if not isinstance(model, str) or not model:
            await self._failed(ws, task_id, "InvalidParameter", "Model can not be null")
            return None, False
        if model not in TARGET_MODELS:
            await self._failed(ws, task_id, "ModelNotFound", f"Model not exist: {model}")
            return None, False
        if not isinstance(voice, str) or not voice:
            await self._failed(ws, task_id, "InvalidParameter", "voice can not be null")
            return None, False
        error = self._check_voice(model, voice)
        if error:
            await self._failed(ws, task_id, *error)
            return None, False
        fmt = str(params.get("format") or "Default").lower()
        rate = params.get("sample_rate") or 0
        if fmt == "default":
            fmt, rate = DEFAULT_FORMAT, rate or DEFAULT_RATE
        if fmt not in FORMATS or not isinstance(rate, int) or (rate and rate not in SAMPLE_RATES):
            await self._failed(ws, task_id, "InvalidParameter", f"unsupported audio format:{fmt}/{rate}")
            return None, False
        task = _Task(task_id, model, voice, fmt, int(rate) or DEFAULT_RATE)
        await self._event(ws, task_id, "task-started", {})
        text = payload["input"].get("text")
        if isinstance(text, str) and text:  # non-duplex mode carries the text in run-task
            task.pending += text
        return task, True

    def _check_voice(self, model: str, voice: str) -> tuple[str, str] | None:
        if voice in self.emulator.settings.system_voices:
            return None
        found = self.emulator.store.get(voice)
        if found is None:
            return "InternalError", "Remote cancelled grpc stream."
        if found.target_model != model:
            return "InvalidParameter", f"voice {voice} belongs to model {found.target_model}, not {model}"
        if found.status != "OK":
            return "InvalidParameter", f"voice {voice} is not ready: status {found.status}"
        return None

    async def _speak(self, ws: web.WebSocketResponse, task: _Task, flush: bool) -> None:
        parts, task.pending = split_sentences(task.pending)
        if flush and task.pending:
            parts.append(task.pending)
            task.pending = ""
        loop = asyncio.get_running_loop()
        for sentence in parts:
            if not sentence.strip():
                continue
            index = task.index
            task.index += 1
            await self._event(ws, task.task_id, "result-generated", {"output": {
                "type": "sentence-begin", "sentence": {"index": index, "words": []}, "original_text": sentence}})
            samples = synthetic_voice(task.voice, sentence, task.rate)
            audio = await loop.run_in_executor(None, encode, samples, task.rate, task.fmt, not task.sent_audio)
            task.sent_audio = True
            await self._event(ws, task.task_id, "result-generated", {"output": {
                "type": "sentence-synthesis", "sentence": {"index": index, "words": []}}})
            await ws.send_bytes(audio)
            task.characters += billed_characters(sentence)
            await self._event(ws, task.task_id, "result-generated", {"output": {
                "type": "sentence-end", "sentence": {"index": index, "words": []}, "original_text": sentence,
                "usage": {"characters": task.characters}}})

    @staticmethod
    async def _event(ws: web.WebSocketResponse, task_id: str, event: str, payload: dict[str, Any]) -> None:
        header = {"task_id": task_id, "event": event, "attributes": {}}
        await ws.send_str(json.dumps({"header": header, "payload": payload}, ensure_ascii=False))

    @staticmethod
    async def _failed(ws: web.WebSocketResponse, task_id: str, code: str, message: str) -> None:
        header = {"task_id": task_id, "event": "task-failed", "error_code": code, "error_message": message,
                  "attributes": {}}
        log.info("synthesis task %s failed: %s", task_id, code)
        await ws.send_str(json.dumps({"header": header, "payload": {}}, ensure_ascii=False))
