"""`voiceprep run` whose workers report each input they take and hold chosen inputs until the test lets them go."""

# python tests/batch_gate.py TOLD_FD [NAME=HOLD_FD ...] -- voiceprep arguments
# Each worker writes "PID NAME\n" to TOLD_FD as it starts on an input (one write, atomic on a pipe);
# on an input called NAME it then waits until HOLD_FD yields a byte or is closed by the test. Used
# by tests/test_batch.py (class Gates) to signal a batch at a known point instead of after a delay.

from __future__ import annotations

import os
import sys
from typing import Any


def main(argv: list[str]) -> None:
    split = argv.index("--")
    told = int(argv[0])
    holds = {name: int(fd) for name, fd in (a.split("=", 1) for a in argv[1:split])}

    from pipeline import runner
    from pipeline.cli import console

    real_probe = runner.probe

    def gated_probe(path: str, *args: Any, **kwargs: Any) -> Any:
        name = os.path.basename(path)
        os.write(told, f"{os.getpid()} {name}\n".encode())
        if name in holds:
            os.read(holds[name], 1)
        return real_probe(path, *args, **kwargs)

    runner.probe = gated_probe  # type: ignore[assignment]  # workers are forked: they inherit it
    console(argv[split + 1 :])


if __name__ == "__main__":
    main(sys.argv[1:])
