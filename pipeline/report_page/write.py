"""write_page: report lines and a config to an HTML page on disk, written atomically."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..writer import write_atomic
from .measures import limits_from_config
from .page import render_page


def write_page(
    path: str | os.PathLike[str],
    lines: Iterable[Mapping[str, Any]],
    config: Any,
    *,
    title: str | None = None,
    source_base: Path | None = None,
    mode: str | None = None,
) -> int:
    """Render report ``lines`` against the limits of ``config`` (a loaded pipeline.yaml) and
    write the page to ``path`` atomically; links to the audio are relative to its folder.
    ``mode``: "check" for `voiceprep check --html`, "run" for `run --html`, None to tell from
    each line. Returns the page's size in bytes."""
    target = Path(path)
    text = render_page(
        lines,
        limits=limits_from_config(config),
        title=title or "voiceprep report",
        link_base=target.absolute().parent,
        source_base=source_base,
        mode=mode,
    )
    return write_atomic(target, text.encode("utf-8"))
