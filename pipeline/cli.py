"""The `voiceprep` command line: main(argv) -> exit code (0 ok, 1 refused, 2 usage/config)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that add subcommands: each exposes register(subparsers) and sets `func` on its parser,
# a callable(args) -> int. Imported lazily so `voiceprep check` stays fast.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "pipeline.commands",
    "pipeline.service.cli_enroll",
    "pipeline.service.cli_synth",
    "pipeline.emulator.cli",
    "pipeline.report_page.command",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"voiceprep: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="voiceprep",
        description="Prepare and validate recordings for CosyVoice voice cloning.",
        epilog="Exit codes: 0 all files pass, 1 some refused, 2 usage or config error.",
    )
    parser.add_argument("--version", action="version", version=f"voiceprep {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args))
    except KeyboardInterrupt:
        sys.stderr.write("voiceprep: interrupted\n")
        return 130


# Commands whose files are all written, fsynced and closed when they return: once their output
# is flushed, the interpreter's teardown would only free memory and unload libraries
# (docs/design.md, "Start-up").
FAST_EXIT_COMMANDS = frozenset({"check", "stages", "run"})
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool stopped by a closed pipe


# BLAS libraries read these once, when numpy loads. voiceprep's matrix products are small and
# `--jobs` already puts a worker on every core: a BLAS helper thread per core only spins
# (docs/design.md). A value the user set is kept.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def one_blas_thread() -> None:
    """Ask the BLAS library numpy loads for one thread (unless the user chose a number)."""
    import os

    if "numpy" not in sys.modules:  # too late once numpy is loaded
        for name in BLAS_THREAD_VARIABLES:
            os.environ.setdefault(name, "1")


def console(argv: Sequence[str] | None = None) -> None:
    """The `voiceprep` console script: ``main`` then exit with its code (fast for `check`)."""
    import os

    one_blas_thread()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = main(args)
        command = next((a for a in args if not a.startswith("-")), None)
        if command in FAST_EXIT_COMMANDS:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    except BrokenPipeError:
        # The reader went away (`voiceprep check --json dir | head -1`): stop quietly, as the
        # shell's own tools do, instead of a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os._exit(EXIT_BROKEN_PIPE)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    console()
