"""The `voiceprep report` subcommand: a JSON Lines report to its HTML page."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="build the HTML page of a run's report (waveforms, speech, windows, verdicts)",
        description="Build one self-contained HTML page from a `voiceprep run --report` file: every take's "
        "waveform, speech, chosen window and verdict, the batch's counts and distributions. The audio stays "
        "where it is; the page plays it by paths relative to the page.",
    )
    p.add_argument("report", metavar="REPORT.jsonl", help="the report written by `voiceprep run --report`")
    p.add_argument("-o", "--output", required=True, metavar="FILE.html", help="the page to write")
    p.add_argument(
        "--config", metavar="PIPELINE.yaml", help="the limits to show (default: the bundled pipeline.yaml)"
    )
    p.add_argument("--title", metavar="TEXT", help="the page's title (default: from the report's name)")
    p.set_defaults(func=cmd_report)


def read_report(path: Path) -> list[dict[str, Any]]:
    """The report's lines; ValueError naming the first line that is not a JSON object."""
    lines = []
    with path.open(encoding="utf-8") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                line = None
            if not isinstance(line, dict) or not isinstance(line.get("input", line.get("path")), str):
                raise ValueError(f"{path}:{number}: not a report line (a JSON object with an `input`)")
            lines.append(line)
    return lines


def source_base(lines: list[dict[str, Any]], report: Path) -> Path:
    """The folder relative paths in the report start from: the current one (where `run` was
    started, usually), unless the files are found only beside the report."""
    relative = [Path(x.get("input", x.get("path", ""))) for x in lines]
    relative = [p for p in relative if not p.is_absolute()]
    here, there = Path.cwd(), report.absolute().parent
    if not relative or there == here:
        return here
    found_here = sum((here / p).exists() for p in relative)
    found_there = sum((there / p).exists() for p in relative)
    return there if found_there > found_here else here


def cmd_report(args: argparse.Namespace) -> int:
    from ..config import load
    from ..errors import ConfigError
    from .write import write_page

    report = Path(args.report)
    try:
        config = load(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"voiceprep: config error: {exc}\n")
        return 2
    try:
        lines = read_report(report)
    except OSError as exc:
        sys.stderr.write(f"voiceprep: error: cannot read {report}: {exc.strerror}\n")
        return 2
    except (ValueError, UnicodeDecodeError) as exc:
        sys.stderr.write(f"voiceprep: error: {exc} (give the file `voiceprep run --report` wrote)\n")
        return 2
    if not lines:
        sys.stderr.write(f"voiceprep: error: {report} holds no report lines (run `voiceprep run --report` first)\n")
        return 2
    title = args.title or f"voiceprep report: {report.name}"
    try:
        size = write_page(args.output, lines, config, title=title, source_base=source_base(lines, report))
    except OSError as exc:
        sys.stderr.write(f"voiceprep: error: cannot write {args.output}: {exc.strerror}\n")
        return 2
    takes = len({str(x.get("input", x.get("path"))) for x in lines})
    sys.stdout.write(f"{args.output}: {takes} take{'s' if takes != 1 else ''}, {size / 1000:.0f} KB\n")
    return 0
