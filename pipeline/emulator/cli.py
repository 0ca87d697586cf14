"""The `emulator` subcommand: serve a local emulator of the voice-cloning service until interrupted."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

from pipeline.errors import ConfigError

NEEDS_EXTRA = "voiceprep: the emulator needs the optional extra: pip install 'voiceprep[emulator]'\n"


def register(sub: Any) -> None:
    e = sub.add_parser(
        "emulator",
        help="run a local emulator of the voice-cloning service (enrollment, uploads, synthesis)",
        description="Serve the CosyVoice enrollment API, the temporary-upload flow and the synthesis "
        "WebSocket locally, with state in SQLite. Point clients at it with DASHSCOPE_HTTP_BASE_URL and "
        "DASHSCOPE_WEBSOCKET_BASE_URL. It fetches audio only from loopback URLs or its own oss:// uploads. "
        "Needs the optional extra: pip install 'voiceprep[emulator]'.",
    )
    add_arguments(e)
    e.set_defaults(func=cmd_emulator)


def add_arguments(e: argparse.ArgumentParser) -> None:
    """The emulator's options (shared by `voiceprep emulator` and `python -m pipeline.emulator`)."""
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
    e.add_argument("--judge", metavar="MODULE:NAME",
                   help="the audio judge: a callable taking a path and returning a verdict with ok, code, message, "
                   "warnings (default: voiceprep's own check)")
    e.add_argument("-v", "--verbose", action="store_true", help="log every request")


def load_judge(spec: str) -> Any:
    """The callable named by ``MODULE:NAME``; raises ConfigError when it cannot be imported or called."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ConfigError(f"--judge {spec!r}: expected MODULE:NAME, e.g. mypackage.judges:strict")
    try:
        judge = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ConfigError(f"--judge {spec!r}: cannot import {module}: {exc}") from None
    except AttributeError:
        raise ConfigError(f"--judge {spec!r}: {module} has no {name}") from None
    if not callable(judge):
        raise ConfigError(f"--judge {spec!r}: {name} is not callable")
    return judge


def cmd_emulator(args: argparse.Namespace) -> int:
    if not has_aiohttp():
        sys.stderr.write(NEEDS_EXTRA)
        return 2
    # Imported here: every command builds this parser, and asyncio alone costs tens of ms to load.
    import asyncio
    import ipaddress
    import logging

    from .core import Emulator
    from .faults import Faults
    from .protocol import DEFAULT_API_KEY
    from .server import serve_forever
    from .settings import Settings

    keys = list(args.api_key or [])
    if args.api_key_env:
        value = os.environ.get(args.api_key_env, "")
        if not value:
            sys.stderr.write(f"voiceprep: error: {args.api_key_env} is not set\n")
            return 2
        keys.append(value)
    try:
        faults = Faults.load(args.faults) if args.faults else Faults()
        judge = load_judge(args.judge) if args.judge else None
        settings = Settings(
            api_keys=tuple(keys) or (DEFAULT_API_KEY,),
            deploy_delay_s=args.deploy_delay,
            quota=args.quota,
            rate_limit_rps=args.rate_limit or None,
            rate_limit_burst=args.burst,
            faults=faults,
        )
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
    emulator = Emulator(args.data, settings, judge=judge)
    try:
        asyncio.run(serve_forever(emulator, args.host, args.port))
    except OSError as exc:
        sys.stderr.write(f"voiceprep: error: cannot serve on {args.host}:{args.port}: {exc.strerror or exc}\n")
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


def has_aiohttp() -> bool:
    """True when the optional extra's aiohttp can be imported (looked up without importing it)."""
    import importlib.util

    return importlib.util.find_spec("aiohttp") is not None
