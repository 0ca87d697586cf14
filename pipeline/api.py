"""The library API: check a file exactly as the service would judge it."""

from __future__ import annotations

import os
from pathlib import Path

from .config import Config, load
from .errors import PipelineError
from .verdict import Verdict

ANALYSIS_RATE = 16000


def check(path: str | os.PathLike[str], config: Config | None = None) -> Verdict:
    """The service's verdict on ``path`` as it would be uploaded; never raises for a bad file.

    Decodes only the first channel (the one the service uses), at 16 kHz, then runs the
    config's ``check`` chain. Raises ConfigError only for a bad ``config``.
    """
    from . import audio_io

    cfg = config if config is not None else load()
    p = os.fspath(path)
    try:
        info = audio_io.probe(p)
        rate = ANALYSIS_RATE if info.sample_rate > ANALYSIS_RATE else None
        clip = audio_io.decode(info, rate=rate, first_channel=True)
        out = cfg.check(clip)
    except PipelineError as exc:
        return Verdict(
            path=p,
            ok=False,
            code=exc.code,
            message=exc.message,
            hint=exc.hint,
            stage=exc.stage,
            metrics=exc.metrics,
        )
    return Verdict(
        path=p,
        ok=True,
        metrics=dict(out.info.get("metrics", {})),
        warnings=[w.as_dict() for w in out.warnings],
    )


AUDIO_SUFFIXES = frozenset(
    [
        ".wav",
        ".wave",
        ".bwf",
        ".rf64",
        ".mp3",
        ".m4a",
        ".mp4",
        ".aac",
        ".mov",
        ".webm",
        ".mkv",
        ".mka",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".aif",
        ".aiff",
        ".aifc",
        ".caf",
        ".w64",
        ".3gp",
        ".amr",
        ".wma",
    ]
)


def expand(paths: list[str]) -> list[Path]:
    """Files named directly, plus audio files (by suffix) found recursively in named folders, sorted."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(
                sorted(
                    f
                    for f in p.rglob("*")
                    if f.is_file()
                    and f.suffix.lower() in AUDIO_SUFFIXES
                    and not any(part.startswith(".") for part in f.relative_to(p).parts)
                )
            )
        else:
            out.append(p)
    return out
