"""`python -m pipeline` runs the voiceprep command line."""

from __future__ import annotations

from .cli import console

console()
