"""The HTML report page: every take's waveform, speech, window and verdict on one self-contained page."""

from __future__ import annotations

from .measures import limits_from_config
from .page import render_page
from .write import write_page

__all__ = ["limits_from_config", "render_page", "write_page"]
