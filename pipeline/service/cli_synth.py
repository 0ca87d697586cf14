"""The `synth` subcommand: synthesize text with a voice over the service's WebSocket, to verify the voice."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

NEEDS_AIOHTTP = "voiceprep: synth needs aiohttp, in the optional extra: pip install 'voiceprep[emulator]'\n"


SYNTH_EPILOG = """\
environment:
  DASHSCOPE_API_KEY             the API key
  DASHSCOPE_WEBSOCKET_BASE_URL  default wss://dashscope.aliyuncs.com/api-ws/v1/inference (Beijing)
exit codes: 0 the WAV was written, 1 the service refused or returned no audio,
  2 usage error (no key or a malformed one, no model, aiohttp missing)"""


def register(sub: Any) -> None:
    s = sub.add_parser(
        "synth",
        help="synthesize TEXT with a voice over the service's WebSocket and write a WAV",
        description="Verify a voice: synthesize TEXT with it and write a 16-bit WAV, as the official SDK's\n"
        "SpeechSynthesizer does (the model must be the one the voice was enrolled for).",
        epilog=SYNTH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("text", metavar="TEXT", help="the text to speak (quote it)")
    s.add_argument("--voice", required=True, metavar="ID", help="voice id, e.g. cosyvoice-v2-demo-<hex>")
    s.add_argument("--model", help="synthesis model (default: the target model in the voice id)")
    s.add_argument("-o", "--out", required=True, metavar="OUT.wav", help="the WAV file to write (16-bit PCM)")
    s.add_argument("--sample-rate", type=int, default=24000, choices=(8000, 16000, 22050, 24000, 44100, 48000),
                   metavar="HZ", help="sample rate asked of the service: 8000, 16000, 22050, 24000 (default), "
                   "44100 or 48000")
    s.add_argument("--timeout", type=float, default=60.0, metavar="S", help="give up after S seconds (default 60)")
    s.set_defaults(func=cmd_synth)


def cmd_synth(args: argparse.Namespace) -> int:
    if not has_aiohttp():
        sys.stderr.write(NEEDS_AIOHTTP)
        return 2
    # Imported here: every command builds this parser, and asyncio and numpy take tens of ms to load.
    import asyncio

    import numpy as np

    from pipeline.errors import ConfigError
    from pipeline.writer import wav16, write_atomic

    from .settings import check_api_key
    from .synth import DEFAULT_WS_URL, SynthesisError, model_for_voice, synthesize

    key = os.environ.get("DASHSCOPE_API_KEY", "")
    if not key:
        sys.stderr.write("voiceprep: error: set DASHSCOPE_API_KEY\n")
        return 2
    try:
        check_api_key(key, "DASHSCOPE_API_KEY")
    except ConfigError as exc:
        sys.stderr.write(f"voiceprep: error: {exc}\n")
        return 2
    model = args.model or model_for_voice(args.voice)
    if not model:
        sys.stderr.write(f"voiceprep: error: cannot tell the model from voice {args.voice!r}; pass --model\n")
        return 2
    url = os.environ.get("DASHSCOPE_WEBSOCKET_BASE_URL") or DEFAULT_WS_URL
    try:
        result = asyncio.run(
            synthesize(args.text, voice=args.voice, model=model, api_key=key, url=url,
                       sample_rate=args.sample_rate, timeout_s=args.timeout)
        )
    except SynthesisError as exc:
        sys.stderr.write(f"voiceprep: synth failed: {exc.code}: {exc.message}\n")
        return 1
    pcm = np.frombuffer(result.pcm[: len(result.pcm) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    if pcm.size == 0:
        sys.stderr.write("voiceprep: synth failed: the service returned no audio\n")
        return 1
    write_atomic(args.out, wav16(pcm[None, :], result.sample_rate))
    seconds = pcm.size / result.sample_rate
    sys.stdout.write(f"{args.out}: {seconds:.2f} s from voice {args.voice} ({model}), {result.characters} characters\n")
    return 0


def has_aiohttp() -> bool:
    """True when the optional extra's aiohttp can be imported (looked up without importing it)."""
    import importlib.util

    return importlib.util.find_spec("aiohttp") is not None
