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
    p.add_argument("--html", metavar="FILE.html",
                   help="also write a page showing every file's waveform, speech and verdict (docs/report.md)")
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
    from .api import check
    from .plan import find
    from .report import shown

    cfg = _config(args.config, ("check",))  # the `run` chain is neither built nor imported
    if cfg is None:
        return 2
    files = list(find(args.paths))  # a missing path stays in the list: it is refused like any bad file
    if not files:
        sys.stderr.write("voiceprep: error: no audio files found in " + ", ".join(map(shown, args.paths)) + "\n")
        return 2
    failed = 0
    page: list[dict[str, Any]] = []
    for f in files:
        verdict = _checked(check, f, cfg, plot=bool(args.html))
        failed += not verdict.ok
        if args.html:
            page.append(verdict.as_dict())
        if args.json:
            record = verdict.as_dict()
            record["path"] = shown(record["path"])
            sys.stdout.write(shown(json.dumps(record, ensure_ascii=False)) + "\n")
        elif not verdict.ok or args.verbose:
            sys.stdout.write(shown(verdict.line()) + "\n")
            for w in verdict.warnings:
                sys.stdout.write(
                    shown(f"{f}: warning {w['code']}: {w['message']}" + (f" ({w['hint']})" if w["hint"] else ""))
                    + "\n"
                )
        sys.stdout.flush()
    if args.html:
        from .report_page import write_page

        write_page(args.html, page, cfg, mode="check")
    return 1 if failed else 0


def _checked(check: Any, path: Any, cfg: Any, *, plot: bool) -> Any:
    """``check``'s verdict; a voiceprep bug on one file becomes that file's verdict, not the folder's end."""
    from .verdict import Verdict

    try:
        return check(path, cfg, plot=plot)
    except Exception as exc:  # noqa: BLE001 - one file must never stop the folder
        return Verdict(
            path=str(path),
            ok=False,
            code="voiceprep.UnexpectedError",
            message=f"{type(exc).__name__}: {exc}",
            hint="this is a voiceprep bug; please report it with the file",
        )


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
                "needs": sorted(cls.needs),
                "provides": sorted(cls.provides),
                "options": [o.__dict__ for o in registry.options(cls)],
            }
            for name, cls in stages.items()
        ]
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return 0
    for name, cls in stages.items():
        sys.stdout.write(f"{name}  ({_kind(cls)})\n    {registry.summary(cls)}\n")
        for o in registry.options(cls):
            valid = f" ({o.range})" if o.range else ""
            sys.stdout.write(f"    {o.name}: {o.type} = {json.dumps(o.default)}{valid}\n        {o.help}\n")
        sys.stdout.write("\n")
    return 0


def register_run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="turn recordings into clean 10-20 s 16-bit WAV clips the service accepts",
        description="Process recordings with the `run` chain of pipeline.yaml. Folders are walked recursively and "
        "mirrored under --out as .wav (with several inputs, each folder in a subfolder named after it); inputs are "
        "never modified; outputs are written atomically. An input unchanged since its output was made (same "
        "content, chain, options and voiceprep version, remembered in DIR/.voiceprep/) is not processed again. "
        "Files that cannot be saved are refused with the service's code and a hint. Ctrl-C stops at once, "
        "leaving nothing partial: run the same command again to finish the batch. Inputs and --out may be "
        "fsspec URLs (s3://bucket/prefix/, with the 'cloud' extra); --executor dask runs the files on a Dask "
        "cluster (the 'dask' extra; see docs/scale.md).",
        epilog=CODES_EPILOG + "\n  130 interrupted (Ctrl-C)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files, or folders searched recursively for audio")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--config", metavar="PIPELINE.yaml", help="pipeline file (default: the bundled pipeline.yaml)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="worker processes of --executor local (default: number of cores)")
    p.add_argument("--executor", choices=("local", "dask"), default="local",
                   help="where files are processed: worker processes here (local, the default) or a Dask cluster")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="with --executor dask: join the cluster of this scheduler (tcp://HOST:PORT)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="with --executor dask and no --scheduler: start a local cluster of N worker processes, "
                   "one thread each (default: number of cores)")
    p.add_argument("--report", metavar="FILE.jsonl",
                   help="write one JSON line per input of this run to this file (rewritten each run)")
    p.add_argument("--json", action="store_true", help="print the report's JSON lines on stdout instead of text lines")
    p.add_argument("--html", metavar="FILE.html",
                   help="also write a page showing every input's waveform, speech, chosen window and verdict")
    p.add_argument("--force", action="store_true", help="process every input again, even unchanged ones")
    p.add_argument("--prune", action="store_true",
                   help="remove the outputs in DIR whose inputs no longer exist (they are only listed otherwise)")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-file lines, only the summary")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    import itertools

    from . import storage
    from .errors import ConfigError
    from .report import shown
    from .runner import plan, run_batch

    cfg = _config(args.config)
    if cfg is None:
        return 2
    usage = _executor_usage(args)
    if usage is not None:
        sys.stderr.write(f"voiceprep: error: {usage}\n")
        return 2
    try:
        if storage.exists(args.out) and not storage.isdir(args.out):
            sys.stderr.write(f"voiceprep: error: --out {args.out} is a file, not a folder\n")
            return 2
        planned = plan(args.paths, args.out)
        first = next(planned, None)
    except ConfigError as exc:
        sys.stderr.write(f"voiceprep: error: {exc}\n")
        return 2
    if first is None:
        sys.stderr.write("voiceprep: error: no audio files found in " + ", ".join(args.paths) + "\n")
        return 2
    progress = sys.stderr.isatty() and not args.quiet and not args.json
    page: list[dict[str, Any]] = []
    executor = None
    if args.executor == "dask":
        try:
            from .dask import DaskExecutor

            executor = DaskExecutor(args.scheduler, args.workers)
        except ConfigError as exc:
            sys.stderr.write(f"voiceprep: error: {exc}\n")
            return 2

    def show(res: Any) -> None:
        if args.html:
            page.append(res.as_dict())
        if args.json:
            sys.stdout.write(res.json() + "\n")
        elif not args.quiet and (not res.ok or not progress):
            sys.stdout.write(res.line() + "\n")
        sys.stdout.flush()

    try:
        outcome = run_batch(
            itertools.chain([first], planned),
            cfg,
            args.out,
            jobs=args.jobs,
            executor=executor,
            report=args.report,
            force=args.force,
            prune=args.prune,
            progress=progress,
            on_result=show,
        )
    except ConfigError as exc:  # e.g. the enroll stage's settings, checked when its client opens, before any file
        sys.stderr.write(f"voiceprep: config error: {exc}\n")
        return 2
    finally:
        if executor is not None:
            executor.stop()
    for orphan in outcome.orphans:
        verb = "removed" if args.prune else "left (--prune removes it)"
        sys.stderr.write(f"voiceprep: {shown(orphan.output)}: its input {shown(orphan.input)} is gone; {verb}\n")
    if args.html:
        from .report_page import write_page

        write_page(args.html, page, cfg, mode="run")
    out = sys.stderr if args.json else sys.stdout
    out.write(outcome.summary.table(outcome.wall_s) + "\n")
    if outcome.interrupted:
        sys.stderr.write("voiceprep: interrupted; run the same command again to finish the batch\n")
        return 130
    return 0 if outcome.summary.refused == 0 else 1


def _executor_usage(args: argparse.Namespace) -> str | None:
    """What is wrong with run's --jobs, --executor, --scheduler, --workers and --report, if anything."""
    from .storage import is_url

    if args.jobs is not None and args.jobs < 1:
        return "--jobs must be at least 1"
    if args.workers is not None and args.workers < 1:
        return "--workers must be at least 1"
    if args.executor != "dask" and (args.scheduler is not None or args.workers is not None):
        return "--scheduler and --workers go with --executor dask"
    if args.executor == "dask" and args.jobs is not None:
        return "--jobs is for --executor local; with --executor dask, --workers N starts a local cluster"
    if args.scheduler is not None and args.workers is not None:
        return "--scheduler joins a running cluster and --workers starts a local one: give one of them"
    if args.report is not None and is_url(args.report):
        return "--report must be a local file (it grows line by line as files finish)"
    return None


def stages_markdown() -> str:
    """Every stage as a markdown section with its options table."""
    from . import registry

    out = []
    for name, cls in registry.available().items():
        out.append(f"## `{name}` ({_kind(cls)})\n\n{registry.summary(cls)}\n")
        opts = registry.options(cls)
        if opts:
            out.append("| option | type | default | valid | meaning |\n|---|---|---|---|---|")
            for o in opts:
                typ = o.type.replace("|", "or")
                out.append(f"| `{o.name}` | {typ} | `{json.dumps(o.default)}` | {o.range or 'any'} | {o.help.replace('|', '/')} |")
        out.append("")
    return "\n".join(out) + "\n"


def _kind(cls: Any) -> str:
    """``changes audio; needs the speech map; provides ...`` for a stage class."""
    from .clip import FACT_NAMES

    parts = ["changes audio" if cls.changes_audio else "measures only"]
    if cls.needs:
        parts.append("needs " + ", ".join(FACT_NAMES[f] for f in sorted(cls.needs)))
    if cls.provides:
        parts.append("provides " + ", ".join(FACT_NAMES[f] for f in sorted(cls.provides)))
    return "; ".join(parts)
