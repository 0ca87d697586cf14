"""The README documents every stage, option and code, and its generated blocks are current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipeline import registry
from pipeline.errors import SERVICE_CODES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_generated_blocks_are_current():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "update_readme.py"), "--check"], check=False)
    assert proc.returncode == 0, "README.md is stale: run `python bench/update_readme.py`"


def test_every_stage_and_option_is_in_the_readme():
    for name, cls in registry.available().items():
        assert f"`{name}`" in README
        for opt in registry.options(cls):
            assert f"`{opt.name}`" in README, f"{name}.{opt.name}"


def test_every_code_is_in_the_readme():
    for code in SERVICE_CODES:
        assert f"`{code}`" in README
    for warning in ("pause_shortened", "narrowband", "low_snr", "clipping", "unsteady_loudness", "hum", "music_bed",
                    "multiple_speakers"):
        assert f"`{warning}`" in README


def test_quick_start_commands_are_present():
    assert "pip install . && .venv/bin/voiceprep run fixtures/speech_librivox_16k.wav" in README
    assert '.venv/bin/pip install -e ".[dev]" && .venv/bin/pytest' in README
    assert ".venv/bin/pytest" in (ROOT / ".ci" / "run").read_text()
