"""Where a fresh `check` spends its time (not a test): one process, one file, printed in ms.

    PYTHONPATH=CODE python tests/tools/check_phases.py FILE     # CODE: a checkout (default: this one)

Phases: importing the command line, building its argument parser, loading the configuration's
`check` chain, importing the library entry point, and judging FILE. Run it a few times for each
checkout, alternated, and compare medians (the machine drifts).
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the console script sets it


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    marks = [time.perf_counter()]
    import pipeline.cli as cli

    marks.append(time.perf_counter())
    cli.build_parser()
    marks.append(time.perf_counter())
    from pipeline import config

    try:
        cfg = config.load(chains=("check",))
    except TypeError:  # code older than the check-only chain
        cfg = config.load()
    marks.append(time.perf_counter())
    from pipeline import api

    marks.append(time.perf_counter())
    api.check(argv[0], config=cfg)
    marks.append(time.perf_counter())
    names = ("import", "parser", "config", "api", "check")
    print("  ".join(f"{n} {(b - a) * 1000:.1f}" for n, a, b in zip(names, marks, marks[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
