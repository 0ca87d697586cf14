"""write_page: report lines and a config to an HTML page on disk, written atomically."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .measures import limits_from_config
from .page import render_page


def write_text_atomic(path: str | os.PathLike[str], text: str) -> int:
    """Write ``text`` (UTF-8) to a temporary file beside ``path``, fsync it and rename it over
    ``path``: a reader never sees a partial page. The file gets the usual permissions (0666
    less the umask). Returns the size in bytes."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    data = text.encode("utf-8")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return len(data)


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
    return write_text_atomic(target, text)
