"""The library API: check a file exactly as the service would judge it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from .clip import Clip, SourceInfo
from .config import Config, load
from .errors import PipelineError
from .verdict import Verdict

ANALYSIS_RATE = 16000
STREAM_CHECK_S = 120.0  # longer inputs are judged in blocks, never held whole (seconds)


def check(path: str | os.PathLike[str], config: Config | None = None) -> Verdict:
    """The service's verdict on ``path`` as it would be uploaded; never raises for a bad file.

    Decodes only the first channel (the one the service uses), at 16 kHz, then runs the
    config's ``check`` chain. Raises ConfigError only for a bad ``config``.
    """
    from . import audio_io

    cfg = config if config is not None else load(chains=("check",))
    p = os.fspath(path)
    try:
        info = audio_io.probe(p)
        rate = ANALYSIS_RATE if info.sample_rate > ANALYSIS_RATE else None
        if info.duration_s > STREAM_CHECK_S:
            clip = _streamed_clip(info, rate, cfg)
        else:
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


def _streamed_clip(info: SourceInfo, rate: int | None, cfg: Config) -> Clip:
    """The first channel of a long input, decoded in blocks: speech is detected over the whole
    file as the blocks pass (with the `validate` stage's settings), the peak is tracked, and
    only the first ``STREAM_CHECK_S`` seconds are kept as the clip's samples. ``validate`` reads
    the whole-file measures from ``info`` (``speech_report``, ``peak``), so memory stays flat
    however long the recording is. Any other check stage sees the first two minutes (a file
    that long already fails the service's 60 s limit before speech is judged).
    """
    import dataclasses

    import numpy as np

    from . import audio_io, speech

    settings = next((st for st in cfg.check.stages if getattr(st, "name", "") == "validate"), None)
    threshold = float(getattr(settings, "vad_threshold", 0.5))
    merge_gap = float(getattr(settings, "merge_gap_s", 0.5))
    out_rate = rate or info.sample_rate
    keep = int(STREAM_CHECK_S * out_rate)
    head: list[np.ndarray] = []
    held = 0
    peak = 0.0
    seen = 0

    def blocks() -> Iterator[np.ndarray]:
        nonlocal held, peak, seen
        for block in audio_io.iter_blocks(info, rate=rate, first_channel=True):
            x = np.nan_to_num(block[0], nan=0.0, posinf=1.0, neginf=-1.0)
            if held < keep:
                head.append(x[: keep - held].copy())
                held += len(head[-1])
            if len(x):
                peak = max(peak, float(np.max(np.abs(x))))
            seen += len(x)
            yield x if out_rate == speech.VAD_RATE else speech.to_vad_rate(x, out_rate)

    report = speech.detect_stream(blocks(), threshold=threshold, merge_gap_s=merge_gap)
    got = seen / out_rate
    if seen == 0:
        raise audio_io.decoder_error(info.path, "no audio could be decoded from the file", "export the recording again")
    if info.duration_s > 1.0 and got < 0.5 * info.duration_s:
        raise audio_io.decoder_error(
            info.path,
            f"truncated: the header declares {info.duration_s:.1f} s but only {got:.1f} s decode",
            "the file was cut off while copying or recording; export it again",
        )
    report = dataclasses.replace(report, duration_s=got)
    source = dataclasses.replace(info, duration_s=got)
    return Clip(
        samples=np.concatenate(head)[np.newaxis, :],
        sample_rate=out_rate,
        source=source,
        info={"speech_report": report, "peak": peak},
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
    """Files named directly, plus audio entries (by suffix) found recursively in named folders, sorted.

    Every entry with an audio suffix that is not a folder is listed, whatever it is (a FIFO, a
    socket, a broken link, a file that cannot be read): each gets its own verdict from ``check``
    rather than being skipped in silence. Hidden files and folders are skipped; links to
    folders are not followed; folders that cannot be listed are skipped.
    """
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.is_dir():
            out.append(p)
            continue
        found: list[Path] = []
        for top, dirs, names in os.walk(p):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in names:
                f = Path(top, name)
                if not name.startswith(".") and f.suffix.lower() in AUDIO_SUFFIXES:
                    found.append(f)
        out.extend(sorted(found))
    return out
