"""The `emulator` and `synth` subcommands: a local voice-cloning service, and a synthesis check of a voice."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def register(sub: Any) -> None:
    e = sub.add_parser(
        "emulator",
        help="run a local emulator of the voice-cloning service (enrollment, uploads, synthesis)",
        description="Serve the CosyVoice enrollment API, the temporary-upload flow and the synthesis "
        "WebSocket locally, with state in SQLite. Point clients at it with DASHSCOPE_HTTP_BASE_URL and "
        "DASHSCOPE_WEBSOCKET_BASE_URL. It fetches audio only from loopback URLs or its own oss:// uploads.",
    )
    e.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    e.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    e.add_argument("--data", default=".voiceprep-emulator", metavar="DIR", help="state folder (SQLite, uploads)")
    e.add_argument(
        "--api-key", action="append", metavar="KEY",
        help="an accepted API key (repeatable; default sk-emulator). Prefer --api-key-env.",
    )
    e.add_argument("--api-key-env", metavar="VAR", help="read the accepted API key from this environment variable")
    e.add_argument("--deploy-delay", type=float, default=10.0, metavar="S", help="seconds DEPLOYING lasts (default 10)")
    e.add_argument("--quota", type=int, default=1000, help="voices per account (default 1000)")
    e.add_argument("--rate-limit", type=float, default=20.0, metavar="RPS",
                   help="enrollment requests per second per key before 429 Throttling.RateQuota (0 = off)")
    e.add_argument("--burst", type=int, default=40, help="rate-limit burst (default 40)")
    e.add_argument("--faults", metavar="FILE", help="fault injection file (YAML/JSON), see docs/emulator.md")
    e.add_argument("-v", "--verbose", action="store_true", help="log every request")
    e.set_defaults(func=cmd_emulator)

    s = sub.add_parser(
        "synth",
        help="synthesize TEXT with a voice over the service's WebSocket and write a WAV",
        description="Verify a voice: synthesize TEXT and write 16-bit WAV. Reads DASHSCOPE_API_KEY and "
        "DASHSCOPE_WEBSOCKET_BASE_URL (default the Beijing service), like the official SDK.",
    )
    s.add_argument("text", metavar="TEXT")
    s.add_argument("--voice", required=True, metavar="ID", help="voice id, e.g. cosyvoice-v2-demo-<hex>")
    s.add_argument("--model", help="synthesis model (default: the target model in the voice id)")
    s.add_argument("-o", "--out", required=True, metavar="OUT.wav")
    s.add_argument("--sample-rate", type=int, default=24000, choices=(8000, 16000, 22050, 24000, 44100, 48000))
    s.add_argument("--timeout", type=float, default=60.0, metavar="S")
    s.set_defaults(func=cmd_synth)


def cmd_emulator(args: argparse.Namespace) -> int:
    import asyncio
    import ipaddress
    import logging

    from pipeline.errors import ConfigError

    from .emulator import DEFAULT_API_KEY, Emulator, Faults, Settings, serve_forever

    keys = list(args.api_key or [])
    if args.api_key_env:
        value = os.environ.get(args.api_key_env, "")
        if not value:
            sys.stderr.write(f"voiceprep: error: {args.api_key_env} is not set\n")
            return 2
        keys.append(value)
    try:
        faults = Faults.load(args.faults) if args.faults else Faults()
    except ConfigError as exc:
        sys.stderr.write(f"voiceprep: config error: {exc}\n")
        return 2
    try:
        loopback = args.host == "localhost" or ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        sys.stderr.write(f"voiceprep: warning: binding {args.host}, not loopback: the emulator is reachable from the network\n")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")
    settings = Settings(
        api_keys=tuple(keys) or (DEFAULT_API_KEY,),
        deploy_delay_s=args.deploy_delay,
        quota=args.quota,
        rate_limit_rps=args.rate_limit or None,
        rate_limit_burst=args.burst,
        faults=faults,
    )
    emulator = Emulator(args.data, settings)
    try:
        asyncio.run(serve_forever(emulator, args.host, args.port))
    except OSError as exc:
        sys.stderr.write(f"voiceprep: error: cannot serve on {args.host}:{args.port}: {exc.strerror or exc}\n")
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    import asyncio

    import numpy as np

    from pipeline.writer import wav16, write_atomic

    from .synth import DEFAULT_WS_URL, SynthesisError, model_for_voice, synthesize

    key = os.environ.get("DASHSCOPE_API_KEY", "")
    if not key:
        sys.stderr.write("voiceprep: error: set DASHSCOPE_API_KEY\n")
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
