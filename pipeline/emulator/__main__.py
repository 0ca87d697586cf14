"""``python -m pipeline.emulator``: the same server as `voiceprep emulator`."""

from __future__ import annotations

import argparse
import sys

from .cli import add_arguments, cmd_emulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.emulator", description="Serve a local CosyVoice emulator.")
    add_arguments(parser)
    return cmd_emulator(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
