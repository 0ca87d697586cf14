"""The audio subcommands: `stages`, `check` (and `run`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

CODES_EPILOG = """\
codes (the service's own):
  BadRequest.UnsupportedFileFormat  not WAV 16-bit PCM, MP3 or M4A/AAC
  Audio.DecoderError                damaged, truncated, empty or not audio
  Audio.FileSizeExceed              larger than 10 MB
  Audio.AudioRateError              sample rate under 16 kHz
  InternalError                     longer than 60 s (the service's "audio preprocess server error")
  Audio.AudioSilentError            10 s of speech or less on the first channel
  Audio.AudioShortError             no continuous speech run longer than 5 s
exit codes: 0 all pass, 1 some refused, 2 usage or config error"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="the service's verdict on each file as it would be uploaded (writes nothing)",
        description="Judge each file exactly as the CosyVoice service would, before upload. "
        "Prints one line per refused file: PATH: CODE: message (hint).",
        epilog=CODES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="FILE|DIR", help="files, or folders searched recursively for audio")
    p.add_argument("--config", metavar="PIPELINE.yaml", help="pipeline file (default: the bundled pipeline.yaml)")
    p.add_argument("--json", action="store_true", help="print JSON Lines with every measured value, one per file")
    p.add_argument("-v", "--verbose", action="store_true", help="also print a line for files that pass")
    p.set_defaults(func=cmd_check)

    s = sub.add_parser(
        "stages",
        help="list every stage with its options, types, defaults and description",
        description="List every registered stage: its YAML name, what it does, and its options.",
    )
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--markdown", action="store_true", help="markdown tables (the README's stage reference)")
    s.set_defaults(func=cmd_stages)

    register_run(sub)


def _config(path: str | None, chains: tuple[str, ...] = ("check", "run")) -> Any:
    from .config import load
    from .errors import ConfigError

    try:
        return load(path, chains=chains)
    except ConfigError as exc:
        sys.stderr.write(f"voiceprep: config error: {exc}\n")
        return None


def cmd_check(args: argparse.Namespace) -> int:
    from .api import check, expand

    cfg = _config(args.config, ("check",))  # the `run` chain is neither built nor imported
    if cfg is None:
        return 2
    files = expand(args.paths)  # a missing path stays in the list: it is refused like any bad file
    if not files:
        sys.stderr.write("voiceprep: error: no audio files found in " + ", ".join(map(_shown, args.paths)) + "\n")
        return 2
    failed = 0
    for f in files:
        verdict = _checked(check, f, cfg)
        failed += not verdict.ok
        if args.json:
            record = verdict.as_dict()
            record["path"] = _shown(record["path"])
            sys.stdout.write(_shown(json.dumps(record, ensure_ascii=False)) + "\n")
        elif not verdict.ok or args.verbose:
            sys.stdout.write(_shown(verdict.line()) + "\n")
            for w in verdict.warnings:
                sys.stdout.write(
                    _shown(f"{f}: warning {w['code']}: {w['message']}" + (f" ({w['hint']})" if w["hint"] else ""))
                    + "\n"
                )
        sys.stdout.flush()
    return 1 if failed else 0


def _checked(check: Any, path: Any, cfg: Any) -> Any:
    """``check``'s verdict; a voiceprep bug on one file becomes that file's verdict, not the folder's end."""
    from .verdict import Verdict

    try:
        return check(path, cfg)
    except Exception as exc:  # noqa: BLE001 - one file must never stop the folder
        return Verdict(
            path=str(path),
            ok=False,
            code="voiceprep.UnexpectedError",
            message=f"{type(exc).__name__}: {exc}",
            hint="this is a voiceprep bug; please report it with the file",
        )


_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(32), 127)}


def _shown(text: str) -> str:
    """``text`` printable on one UTF-8 line whatever a file name holds: bytes that are not UTF-8
    (kept by Python as lone surrogates) and control characters are shown as ``\\xNN`` escapes."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # surrogates that do not come from a file name
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace").translate(_CONTROLS)


def cmd_stages(args: argparse.Namespace) -> int:
    from . import registry

    stages = registry.available()
    if args.markdown:
        sys.stdout.write(stages_markdown())
        return 0
    if args.json:
        out = [
            {
                "name": name,
                "summary": registry.summary(cls),
                "changes_audio": bool(cls.changes_audio),
                "options": [o.__dict__ for o in registry.options(cls)],
            }
            for name, cls in stages.items()
        ]
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return 0
    for name, cls in stages.items():
        kind = "changes audio" if cls.changes_audio else "measures only"
        sys.stdout.write(f"{name}  ({kind})\n    {registry.summary(cls)}\n")
        for o in registry.options(cls):
            sys.stdout.write(f"    {o.name}: {o.type} = {json.dumps(o.default)}\n        {o.help}\n")
        sys.stdout.write("\n")
    return 0


def register_run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="turn recordings into clean 10-20 s 16-bit WAV clips the service accepts",
        description="Process recordings with the `run` chain of pipeline.yaml. Folders are walked recursively and "
        "mirrored under --out as .wav; inputs are never modified; outputs are written atomically. Files that "
        "cannot be saved are refused with the service's code and a hint.",
        epilog=CODES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files, or folders searched recursively for audio")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--config", metavar="PIPELINE.yaml", help="pipeline file (default: the bundled pipeline.yaml)")
    p.add_argument("--jobs", type=int, default=None, metavar="N", help="worker processes (default: number of cores)")
    p.add_argument("--report", metavar="FILE.jsonl", help="append one JSON line per input to this file")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-file lines, only the summary")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .report import summary
    from .runner import plan, run_paths

    cfg = _config(args.config)
    if cfg is None:
        return 2
    if args.jobs is not None and args.jobs < 1:
        sys.stderr.write("voiceprep: error: --jobs must be at least 1\n")
        return 2
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        sys.stderr.write(f"voiceprep: error: no such file or folder: {missing[0]}\n")
        return 2
    if not plan(args.paths, args.out):
        sys.stderr.write("voiceprep: error: no audio files found in " + ", ".join(args.paths) + "\n")
        return 2
    progress = sys.stderr.isatty() and not args.quiet

    def show(res: Any) -> None:
        if not args.quiet and (not res.ok or not progress):
            sys.stdout.write(res.line() + "\n")
            sys.stdout.flush()

    from .errors import ConfigError

    try:
        results = run_paths(
            args.paths,
            args.out,
            cfg,
            jobs=args.jobs,
            report=Path(args.report) if args.report else None,
            progress=progress,
            on_result=show,
        )
    except ConfigError as exc:  # e.g. the `enroll:` section, checked before any file when the chain enrolls
        sys.stderr.write(f"voiceprep: config error: {exc}\n")
        return 2
    sys.stdout.write(summary(results) + "\n")
    return 0 if all(r.ok for r in results) else 1


def stages_markdown() -> str:
    """Every stage as a markdown section with its options table."""
    from . import registry

    out = []
    for name, cls in registry.available().items():
        kind = "changes audio" if cls.changes_audio else "measures only"
        out.append(f"#### `{name}` ({kind})\n\n{registry.summary(cls)}\n")
        opts = registry.options(cls)
        if opts:
            out.append("| option | type | default | meaning |\n|---|---|---|---|")
            for o in opts:
                typ = o.type.replace("|", "or")
                out.append(f"| `{o.name}` | {typ} | `{json.dumps(o.default)}` | {o.help.replace('|', '/')} |")
        out.append("")
    return "\n".join(out) + "\n"
