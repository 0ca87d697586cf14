"""Report lines with plot data, built from real recordings: the real `run` and `check` produce
them; ``with_plot`` rebuilds the plot from the files on disk for a report line that has none
(reports written before plots existed, and the benchmark's synthetic batches)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from pipeline import api, speech
from pipeline.cli import main as cli_main
from pipeline.report_page.envelope import envelope

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
PAUSE_TO_S = 0.5  # the window stage's default pause_to_s


def first_channel(path: str | Path) -> tuple[np.ndarray, int]:
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return np.ascontiguousarray(x[:, 0]), int(sr)


def speech_segments(x: np.ndarray, sr: int) -> list[list[float]]:
    report = speech.detect(x, sr)
    return [[round(float(a), 3), round(float(b), 3)] for a, b in report.segments]


def pieces_of(window: Sequence[float], segments: Sequence[Sequence[float]], shortened: bool) -> list[list[float]]:
    """The input intervals a window keeps: the whole window, or (pauses shortened) the window cut
    at every pause longer than ``PAUSE_TO_S``, half of that kept on each side, as stages/window.py does."""
    a, b = float(window[0]), float(window[1])
    if not shortened:
        return [[a, b]]
    inside = [s for s in segments if s[1] > a and s[0] < b]
    pieces, start, half = [], a, PAUSE_TO_S / 2
    for prev, nxt in itertools.pairwise(inside):
        if nxt[0] - prev[1] > PAUSE_TO_S:
            pieces.append([start, round(prev[1] + half, 3)])
            start = round(nxt[0] - half, 3)
    pieces.append([start, b])
    return pieces


def input_plot(path: str | Path) -> dict[str, Any]:
    x, sr = first_channel(path)
    return {
        "input_s": round(len(x) / sr, 3),
        "input_env": envelope(x),
        "output_s": None,
        "output_env": None,
        "speech": speech_segments(x, sr),
        "speech_span": None,
        "window": None,
        "pieces": [],
        "output_speech": [],
    }


def with_plot(line: dict[str, Any]) -> dict[str, Any]:
    """``line`` (a `run` report line) with the ``plot`` the runner will add, from the files on disk."""
    if "plot" in line:
        return line
    plot = input_plot(line["input"])
    seg = line.get("segment")
    if seg:
        window = [seg["start_s"], seg["end_s"]]
        shortened = any(w["code"] == "pause_shortened" for w in line.get("warnings", []))
        plot["window"] = window
        plot["pieces"] = pieces_of(window, plot["speech"], shortened)
    if line.get("output"):
        y, sr = first_channel(line["output"])
        plot["output_s"] = round(len(y) / sr, 3)
        plot["output_env"] = envelope(y)
        plot["output_speech"] = speech_segments(y, sr)
    return {**line, "plot": plot}


def run_lines(paths: Iterable[str | Path], out_dir: Path, report: Path | None = None) -> list[dict[str, Any]]:
    """`voiceprep run PATHS --out OUT_DIR --report REPORT`, then each line with its plot."""
    report = report or out_dir / "report.jsonl"
    cli_main(["run", *map(str, paths), "--out", str(out_dir), "--report", str(report), "--jobs", "1", "-q"])
    lines = [json.loads(x) for x in report.read_text(encoding="utf-8").splitlines() if x.strip()]
    return [with_plot(x) for x in lines]


def check_lines(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """`voiceprep check` verdicts as report lines (no output), with the input's plot."""
    out = []
    for p in paths:
        v = api.check(p, plot=True)
        plot = v.plot
        out.append({
            "input": str(p),
            "status": "ok" if v.ok else "rejected",
            "output": None,
            "code": v.code,
            "message": v.message,
            "hint": v.hint,
            "stage": v.stage,
            "warnings": list(v.warnings),
            "segment": None,
            "metrics": {k: val for k, val in v.metrics.items() if k != "segments"},
            "plot": plot,
        })
    return out


RUN_INPUTS = (
    "speech_librivox_16k.wav",  # accepted as it is
    "meeting_ami_trn05_16k.flac",  # accepted, its window in the second half
    "speech_arctic_awb_16k.wav",  # refused: 4 s of speech
    "nonspeech_hold_music_8k.flac",  # refused: 8 kHz
    "nonspeech_music_stereo_44k.flac",  # refused: music, no speech
)


def real_batch(root: Path) -> dict[str, Any]:
    """The inputs above and a reader whose pauses must be shortened (``spaced_speech``), through
    `run` into ``root``; three of them through `check` too."""
    import shutil

    from pipeline import config

    inputs = root / "in"
    inputs.mkdir()
    for name in RUN_INPUTS:
        shutil.copy(FIXTURES / name, inputs / name)
    spaced_speech(inputs / "spaced_reader.wav")
    lines = run_lines([inputs], root / "out", root / "report.jsonl")
    checked = check_lines([inputs / n for n in ("speech_librivox_16k.wav", "speech_arctic_awb_16k.wav",
                                                "nonspeech_hold_music_8k.flac")])
    return {"root": root, "lines": lines, "check": checked, "config": config.load()}


def spaced_speech(path: Path, gap_s: float = 3.0) -> Path:
    """A real reader (LibriVox) with every pause stretched to ``gap_s`` of real room noise: no
    10-20 s window qualifies without shortening pauses, so the run must shorten them."""
    x, sr = first_channel(FIXTURES / "speech_librivox_16k.wav")
    noise, nsr = first_channel(FIXTURES / "noise_room_ami_16k.flac")
    assert nsr == sr
    noise = noise / (np.max(np.abs(noise)) + 1e-9) * 0.01
    parts, cursor = [], 0
    for a, b in speech_segments(x, sr):
        parts.append(noise[cursor : cursor + int(gap_s * sr)])
        cursor += int(gap_s * sr)
        parts.append(x[int(a * sr) : int(b * sr)])
    parts.append(noise[cursor : cursor + int(gap_s * sr)])
    sf.write(path, np.concatenate(parts), sr, subtype="PCM_16")
    return path
