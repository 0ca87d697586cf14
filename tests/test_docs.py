"""The documentation: the README is the front door (small, no paragraph of docs/ repeated), every
stage, option and code is documented, generated pages are current, links resolve."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import registry
from pipeline.errors import SERVICE_CODES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = sorted((ROOT / "docs").glob("*.md"))
WARNINGS = ("pause_shortened", "narrowband", "low_snr", "clipping", "unsteady_loudness", "hum", "music_bed",
            "multiple_speakers", "dc_offset")


def test_generated_pages_are_current():
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "tools" / "docs.py"), "--check"], check=False,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_every_stage_and_option_is_documented():
    stages = (ROOT / "docs" / "stages.md").read_text(encoding="utf-8")
    for name, cls in registry.available().items():
        assert f"`{name}`" in stages
        for opt in registry.options(cls):
            assert f"`{opt.name}`" in stages, f"{name}.{opt.name}"


def test_every_code_is_in_the_readme():
    for code in SERVICE_CODES:
        assert f"`{code}`" in README
    for warning in WARNINGS:
        assert f"`{warning}`" in README


def test_quick_start_commands_are_present():
    assert "pip install . && .venv/bin/voiceprep run fixtures/speech_librivox_16k.wav" in README
    assert '.venv/bin/pip install -e ".[dev]" && .venv/bin/pytest' in README
    assert ".venv/bin/pytest" in (ROOT / ".ci" / "run").read_text()


def test_readme_is_the_front_door():
    assert len(README.encode("utf-8")) <= 16 * 1024
    flat = re.sub(r"\s+", " ", README)
    for page in DOCS:
        for para in re.split(r"\n\s*\n", page.read_text(encoding="utf-8")):
            text = re.sub(r"\s+", " ", para).strip()
            assert len(text) < 200 or text not in flat, f"README repeats a paragraph of {page.name}: {text[:60]}"
        assert f"docs/{page.name}" in README, f"the README does not point at {page.name}"


@pytest.mark.parametrize("page", [ROOT / "README.md", *DOCS], ids=lambda p: p.name)
def test_local_links_resolve(page: Path):
    text = page.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"
