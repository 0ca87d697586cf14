"""The HTML report page: every take's waveform, speech, window and verdict on one self-contained page."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .measures import limits_from_config
    from .page import render_page
    from .write import write_page

__all__ = ["limits_from_config", "render_page", "write_page"]

# Where each public name lives: imported on first use, so that building the command line
# (which imports `pipeline.report_page.command`) loads neither numpy nor the page's code.
_HOMES = {"limits_from_config": "measures", "render_page": "page", "write_page": "write"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
