"""Plan a batch: walk the inputs once, lazily, and give each an output path no other input shares."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

AUDIO_SUFFIXES = frozenset(
    [".wav", ".wave", ".bwf", ".rf64", ".mp3", ".m4a", ".mp4", ".aac", ".mov", ".webm", ".mkv", ".mka", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".aifc", ".caf", ".w64", ".3gp", ".amr", ".wma"]
)
STATE_DIR = ".voiceprep"  # an output folder's state (its manifest); a folder holding one is never an input


@dataclass(frozen=True)
class Job:
    """One input and the output it makes (``output`` is empty when only checking)."""

    input: str
    output: str = ""


def is_audio_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in AUDIO_SUFFIXES


def output_names(files: Iterable[str], taken: Iterable[str] = ()) -> dict[str, str]:
    """Output file names for the audio files of one folder: ``stem.wav`` when no other file of the
    folder has that stem, else ``name.wav`` (``a.mp3`` beside ``a.m4a``: ``a.mp3.wav``), with
    ``~2``, ``~3``... before ``.wav`` when even that is taken (by another output or a name in
    ``taken``, such as a subfolder's). Distinct files always get distinct names."""
    names = sorted(files)
    first = {f: os.path.splitext(f)[0] + ".wav" for f in names}
    counts = Counter(first.values())
    used = set(taken)
    out: dict[str, str] = {}
    for f in names:  # unambiguous stems first, so they keep the natural name
        if counts[first[f]] == 1 and first[f] not in used:
            out[f] = first[f]
            used.add(first[f])
    for f in names:
        if f in out:
            continue
        stem = f[:-4] if f.endswith(".wav") else f
        candidate, k = f"{stem}.wav", 1
        while candidate in used:
            k += 1
            candidate = f"{stem}~{k}.wav"
        out[f] = candidate
        used.add(candidate)
    return out


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _is_output_folder(path: str) -> bool:
    return os.path.isdir(os.path.join(path, STATE_DIR))


def _listing(folder: str) -> tuple[list[str], list[str]]:
    """(audio entries, subfolders) of ``folder``, hidden names left out. Audio entries are any
    non-folder entry with an audio suffix (regular files, and FIFOs, sockets, devices or broken
    links too: each of those is refused with a verdict, never skipped silently)."""
    files, dirs = [], []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                if is_dir:
                    dirs.append(entry.name)
                elif is_audio_name(entry.name):
                    files.append(entry.name)
    except OSError:
        return [], []
    return files, sorted(dirs)


def _walk(folder: str, out_folder: str | None, skip: str | None) -> Iterator[tuple[str, str | None]]:
    """(input path, output path or None) for every audio entry under ``folder``, depth first,
    folders in name order, outputs mirrored under ``out_folder``; ``skip`` (the output folder,
    when it lies inside an input) and folders holding a voiceprep state are not entered."""
    files, dirs = _listing(folder)
    names = output_names(files, taken=dirs) if out_folder is not None else {}
    for f in sorted(files):
        yield os.path.join(folder, f), (os.path.join(out_folder, names[f]) if out_folder is not None else None)
    for d in dirs:
        sub = os.path.join(folder, d)
        if (skip is not None and _same(sub, skip)) or _is_output_folder(sub):
            continue
        yield from _walk(sub, os.path.join(out_folder, d) if out_folder is not None else None, skip)


def find(paths: Iterable[str]) -> Iterator[str]:
    """The inputs named by ``paths``: files as given (whatever their name, even missing ones, which
    then get their verdict), and the audio entries of folders, walked recursively, lazily."""
    for raw in paths:
        if os.path.isdir(raw):
            for path, _ in _walk(raw, None, None):
                yield path
        else:
            yield raw


def _labels(paths: list[str]) -> list[str]:
    """Top-level output names for several inputs: each folder a subfolder named after it, each
    file a name of its own (``output_names``), all distinct."""
    dirs = [p for p in paths if os.path.isdir(p)]
    files = [p for p in paths if not os.path.isdir(p)]
    used: set[str] = set()
    dir_label: dict[str, str] = {}
    for d in dirs:
        base = os.path.basename(os.path.normpath(os.path.abspath(d))) or "input"
        label, k = base, 1
        while label in used:
            k += 1
            label = f"{base}~{k}"
        dir_label[d] = label
        used.add(label)
    by_name = output_names([os.path.basename(f) for f in files], taken=used)
    return [dir_label[p] if p in dir_label else by_name[os.path.basename(p)] for p in paths]


def check_out(paths: list[str], out_dir: str) -> None:
    """Refuse (ConfigError) an output folder that would overwrite an input: ``--out`` equal to an
    input folder, or a file named directly whose output would be the file itself."""
    for p in paths:
        if os.path.isdir(p) and _same(p, out_dir):
            raise ConfigError(f"--out {out_dir} is the input folder {p}: outputs would replace inputs; choose another folder")
    if len(set(paths)) != len(paths):
        raise ConfigError("an input is named twice on the command line")
    for p, label in zip(paths, _labels(paths) if len(paths) > 1 else [None] * len(paths)):
        if not os.path.isdir(p):
            name = label or output_names([os.path.basename(p)])[os.path.basename(p)]
            if os.path.abspath(os.path.join(out_dir, name)) == os.path.abspath(p) or _same(os.path.join(out_dir, name), p):
                raise ConfigError(f"--out {out_dir} would overwrite the input {p}; choose another folder")


def plan(paths: Iterable[str], out_dir: str | Path) -> Iterator[Job]:
    """Every input and its output under ``out_dir``, lazily, in a stable order.

    One input: a folder is mirrored under ``out_dir``, a file becomes ``out_dir/<name>.wav``.
    Several: each folder is mirrored in a subfolder named after it, each file goes to the top.
    Within a folder ``take.m4a`` becomes ``take.wav`` unless another input shares the stem (then
    ``take.m4a.wav``); distinct inputs never share an output. The output folder, when it lies
    inside an input folder, is not walked, nor is any folder holding a voiceprep state.
    """
    roots = list(paths)
    out = os.fspath(out_dir)
    check_out(roots, out)
    labels: list[str | None] = list(_labels(roots)) if len(roots) > 1 else [None]
    for root, label in zip(roots, labels):
        if os.path.isdir(root):
            target = out if label is None else os.path.join(out, label)
            for path, output in _walk(root, target, out):
                yield Job(path, output or "")
        else:
            name = label or output_names([os.path.basename(root)])[os.path.basename(root)]
            yield Job(root, os.path.join(out, name))
