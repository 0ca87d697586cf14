"""Plan a batch: walk the inputs once, lazily, and give each an output path no other input shares."""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import storage
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


def _stem(name: str) -> str:
    return os.path.splitext(name)[0]


class _Namer:
    """Output names for the audio files of one folder (``names``, sorted), given on demand so a
    folder of 100,000 files costs one sorted list of its names: ``stem.wav`` when no other file
    of the folder has that stem, else ``name.wav`` (``a.mp3`` beside ``a.m4a``: ``a.mp3.wav``),
    with ``~2``, ``~3``... before ``.wav`` when even that is taken (by a natural name of another
    file, a name already given, or a name in ``taken``, such as a subfolder's)."""

    def __init__(self, names: list[str], taken: Iterable[str] = ()) -> None:
        self.names = names
        self.taken = set(taken)
        self.given: set[str] = set()  # names given to files whose stem was shared: few

    def _has(self, name: str) -> bool:
        i = bisect.bisect_left(self.names, name)
        return i < len(self.names) and self.names[i] == name

    def _shares_stem(self, name: str) -> bool:
        """Whether another file of the folder has ``name``'s stem (all start with ``stem + "."``)."""
        stem = _stem(name)
        i = bisect.bisect_left(self.names, stem + ".")
        while i < len(self.names) and self.names[i].startswith(stem + "."):
            if self.names[i] != name and _stem(self.names[i]) == stem:
                return True
            i += 1
        return False

    def _natural(self, name: str) -> str | None:
        """``name``'s natural output name when it keeps it (its stem unshared, nothing taken)."""
        natural = _stem(name) + ".wav"
        return None if self._shares_stem(name) or natural in self.taken else natural

    def name(self, f: str) -> str:
        natural = self._natural(f)
        if natural is not None:
            return natural
        stem = f[:-4] if f.endswith(".wav") else f
        candidate, k = f"{stem}.wav", 1
        # taken when it is another file's natural name, a name already given, or a subfolder's
        while candidate in self.taken or candidate in self.given or self._natural_of_other(candidate, f):
            k += 1
            candidate = f"{stem}~{k}.wav"
        self.given.add(candidate)
        return candidate

    def _natural_of_other(self, candidate: str, f: str) -> bool:
        """Whether ``candidate`` is the natural name some other file of the folder keeps."""
        stem = candidate[:-4]
        i = bisect.bisect_left(self.names, stem + ".")
        while i < len(self.names) and self.names[i].startswith(stem + "."):
            other = self.names[i]
            if other != f and _stem(other) == stem and self._natural(other) == candidate:
                return True
            i += 1
        return False


def output_names(files: Iterable[str], taken: Iterable[str] = ()) -> dict[str, str]:
    """Output file names for the audio files of one folder (see ``_Namer``): distinct files
    always get distinct names."""
    namer = _Namer(sorted(files), taken)
    return {f: namer.name(f) for f in namer.names}


def _same(a: str, b: str) -> bool:
    if storage.is_url(a) or storage.is_url(b):
        return storage.same(a, b)
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _is_output_folder(path: str) -> bool:
    if storage.is_url(path):
        return storage.isdir(storage.join(path, STATE_DIR))
    return os.path.isdir(os.path.join(path, STATE_DIR))


def _listing(folder: str) -> tuple[list[str], list[str]]:
    """(audio entries, subfolders) of ``folder``, hidden names left out. Audio entries are any
    non-folder entry with an audio suffix (regular files, and FIFOs, sockets, devices or broken
    links too: each of those is refused with a verdict, never skipped silently). A URL's folder
    is listed through fsspec."""
    if storage.is_url(folder):
        names, dirs = storage.listing(folder)
        return [n for n in names if is_audio_name(n)], dirs
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
    files.sort()
    namer = _Namer(files, taken=dirs) if out_folder is not None else None
    for f in files:
        output = storage.join(out_folder, namer.name(f)) if out_folder is not None and namer is not None else None
        yield storage.join(folder, f), output
    del files, namer  # the subfolders' walks need not hold this folder's names
    for d in dirs:
        sub = storage.join(folder, d)
        if (skip is not None and _same(sub, skip)) or _is_output_folder(sub):
            continue
        yield from _walk(sub, storage.join(out_folder, d) if out_folder is not None else None, skip)


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
    is_dir = {p: storage.isdir(p) for p in paths}
    dirs = [p for p in paths if is_dir[p]]
    files = [p for p in paths if not is_dir[p]]
    used: set[str] = set()
    dir_label: dict[str, str] = {}
    for d in dirs:
        base = storage.basename(d) or "input"
        label, k = base, 1
        while label in used:
            k += 1
            label = f"{base}~{k}"
        dir_label[d] = label
        used.add(label)
    by_name = output_names([_name(f) for f in files], taken=used)
    return [dir_label[p] if p in dir_label else by_name[_name(p)] for p in paths]


def _name(path: str) -> str:
    """A file's own name (a URL's last part)."""
    return storage.basename(path) if storage.is_url(path) else os.path.basename(path)


def check_out(paths: list[str], out_dir: str) -> None:
    """Refuse (ConfigError) an output folder that would overwrite an input: ``--out`` equal to an
    input folder, or a file named directly whose output would be the file itself."""
    for p in paths:
        if storage.isdir(p) and _same(p, out_dir):
            raise ConfigError(f"--out {out_dir} is the input folder {p}: outputs would replace inputs; choose another folder")
    if len(set(paths)) != len(paths):
        raise ConfigError("an input is named twice on the command line")
    for p, label in zip(paths, _labels(paths) if len(paths) > 1 else [None] * len(paths)):
        if not storage.isdir(p):
            name = label or output_names([_name(p)])[_name(p)]
            target = storage.join(out_dir, name)
            if storage.canonical(target) == storage.canonical(p) or _same(target, p):
                raise ConfigError(f"--out {out_dir} would overwrite the input {p}; choose another folder")


def plan(paths: Iterable[str], out_dir: str | Path) -> Iterator[Job]:
    """Every input and its output under ``out_dir``, lazily, in a stable order.

    One input: a folder is mirrored under ``out_dir``, a file becomes ``out_dir/<name>.wav``.
    Several: each folder is mirrored in a subfolder named after it, each file goes to the top.
    Within a folder ``take.m4a`` becomes ``take.wav`` unless another input shares the stem (then
    ``take.m4a.wav``); distinct inputs never share an output. The output folder, when it lies
    inside an input folder, is not walked, nor is any folder holding a voiceprep state. Inputs
    and ``out_dir`` may be fsspec URLs (``s3://bucket/prefix/``), each side independently.
    """
    roots = list(paths)
    out = os.fspath(out_dir)
    check_out(roots, out)
    labels: list[str | None] = list(_labels(roots)) if len(roots) > 1 else [None]
    for root, label in zip(roots, labels):
        if storage.isdir(root):
            target = out if label is None else storage.join(out, label)
            for path, output in _walk(root, target, out):
                yield Job(path, output or "")
        else:
            name = label or output_names([_name(root)])[_name(root)]
            yield Job(root, storage.join(out, name))
