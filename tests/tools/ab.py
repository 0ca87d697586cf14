"""Side by side (not a test): two commands as alternated fresh processes, median wall times.

    python tests/tools/ab.py 30 env PYTHONPATH=/tmp/old python -m pipeline.cli check take.wav \\
        --vs env PYTHONPATH=. python -m pipeline.cli check take.wav

Three warm-up pairs, then ``N`` pairs, A then B each time, so both see the same state of a
machine that drifts; prints the median of each and the median of the paired differences.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall_s(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, check=False)
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    if len(argv) < 4 or "--vs" not in argv or not argv[0].isdigit():
        print(__doc__, file=sys.stderr)
        return 2
    n, split = int(argv[0]), argv.index("--vs")
    a, b = argv[1:split], argv[split + 1 :]
    for _ in range(3):
        wall_s(a), wall_s(b)
    ta, tb = [], []
    for _ in range(n):
        ta.append(wall_s(a))
        tb.append(wall_s(b))
    diff = statistics.median(y - x for x, y in zip(ta, tb))
    base = statistics.median(ta)
    print(f"A median {base * 1000:.1f} ms  B median {statistics.median(tb) * 1000:.1f} ms  "
          f"B-A median {diff * 1000:+.1f} ms ({diff / base * 100:+.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
