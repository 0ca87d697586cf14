"""docs/quality.md's calibration tables are exactly what `tests/tools/calibrate_quality.py` gives today."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "tools"))

import calibrate_quality


def test_committed_tables_are_what_the_command_gives():
    committed = calibrate_quality.committed()
    assert committed, "docs/quality.md has no calibration block"
    assert calibrate_quality.tables() == committed, "stale: run `python tests/tools/calibrate_quality.py --write`"
