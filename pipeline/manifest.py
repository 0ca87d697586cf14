"""An output folder's manifest: what each output was made from, so that unchanged inputs are not processed again."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import storage
from .pipeline import Pipeline
from .plan import STATE_DIR
from .report import FileResult

MANIFEST_NAME = "manifest.sqlite"
COMMIT_EVERY_S = 0.5  # a crash loses at most this much bookkeeping: those files are simply redone
UPLOAD_EVERY_S = 30.0  # the same for an output folder behind a URL, whose manifest is uploaded whole
CACHE_ENV = "VOICEPREP_CACHE"  # where the manifests of URL output folders are kept while a run uses them

SCHEMA = """
CREATE TABLE IF NOT EXISTS outputs (
    output BLOB PRIMARY KEY,   -- the output path relative to the folder (file-system bytes)
    input BLOB NOT NULL,       -- the input path as the run named it (file-system bytes)
    size INTEGER NOT NULL,     -- the input's size and modification stamp when it was processed
    mtime_ns INTEGER NOT NULL, -- (st_mtime_ns; for a URL, storage.stat's stamp)
    sha256 TEXT NOT NULL,      -- the input's content
    config TEXT NOT NULL,      -- chain_key() of the run chain, with voiceprep's version
    status TEXT NOT NULL,      -- ok | rejected
    result TEXT NOT NULL,      -- the report line
    run_id TEXT NOT NULL,      -- the run that made it
    seen TEXT NOT NULL         -- the last run that planned it
);
"""


def chain_key(chain: Pipeline) -> str:
    """A short hash of a chain's stages and every option, and of voiceprep's version: an output
    made under another key is made again."""
    from . import __version__

    spec = [[s.name, dataclasses.asdict(s)] for s in chain.stages]  # type: ignore[call-overload]
    text = json.dumps([__version__, spec], sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Fingerprint:
    """What an input was when it was processed: size, modification time, content hash."""

    size: int
    mtime_ns: int
    sha256: str

    @classmethod
    def of(cls, path: str, local: str | None = None) -> Fingerprint:
        """``path``'s fingerprint; ``local``, when given, is a copy of its content to hash (a URL's
        input already fetched for decoding)."""
        size, stamp = storage.stat(path)
        return cls(size, stamp, storage.sha256(local or path))


def cache_folder() -> str:
    """Where the manifests of URL output folders are kept locally (``$VOICEPREP_CACHE``, else
    ``$XDG_CACHE_HOME/voiceprep`` or ``~/.cache/voiceprep``)."""
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "voiceprep")
    return os.path.join(root, "manifests")


@dataclass(frozen=True)
class Orphan:
    """An output whose input no longer exists."""

    output: str
    input: str


class Manifest:
    """The state of one output folder (``FOLDER/.voiceprep/manifest.sqlite``), written only by the
    process that coordinates a batch. Rows are committed every ``COMMIT_EVERY_S`` and on close.

    An output folder behind a URL keeps the same file: it is downloaded into ``cache_folder()``
    when the manifest opens, used there, and uploaded back every ``UPLOAD_EVERY_S`` and on close."""

    def __init__(self, folder: str, *, run_id: str, config: str) -> None:
        self.folder = folder
        self.run_id = run_id
        self.config = config
        self._remote = storage.join(folder, STATE_DIR, MANIFEST_NAME) if storage.is_url(folder) else None
        if self._remote is None:
            state = os.path.join(folder, STATE_DIR)
            os.makedirs(state, exist_ok=True)
            path = os.path.join(state, MANIFEST_NAME)
        else:
            path = self._fetch(self._remote)
        # the rollback journal (not WAL): it works on network file systems, with one writer
        self._db = sqlite3.connect(path, timeout=30.0)
        self._db.executescript(SCHEMA)
        self._db.commit()
        self._last_commit = self._last_upload = time.monotonic()
        if self._remote is not None:
            storage.upload(path, self._remote)  # marks the folder as an output folder from the start
        self._path = path
        self._listed: tuple[str, frozenset[str]] = ("", frozenset())  # the last URL output folder listed

    @staticmethod
    def _fetch(remote: str) -> str:
        """A local working copy of the manifest at ``remote`` (empty when there is none yet)."""
        cache = cache_folder()
        os.makedirs(cache, exist_ok=True)
        path = os.path.join(cache, hashlib.sha256(storage.canonical(remote).encode()).hexdigest()[:24] + ".sqlite")
        for stale in (path, path + "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)
        storage.download(remote, path)
        return path

    def _key(self, output: str) -> bytes:
        return os.fsencode(storage.relative(output, self.folder))

    def unchanged(self, input_path: str, output: str) -> FileResult | None:
        """The earlier verdict on ``input_path`` when it, the chain and the version are unchanged
        since ``output`` was made (and an ok output still exists); else None. A changed
        modification time alone is checked against the content hash."""
        row = self._db.execute(
            "SELECT size, mtime_ns, sha256, config, status, result FROM outputs WHERE output = ?", (self._key(output),)
        ).fetchone()
        if row is None or row[3] != self.config:
            return None
        size, mtime_ns, sha, _, status, result = row
        try:
            now_size, now_stamp = storage.stat(input_path)
        except OSError:
            return None
        if now_size != size:
            return None
        if now_stamp != mtime_ns:
            try:
                if storage.sha256(input_path) != sha:
                    return None
            except OSError:
                return None
        if status == "ok" and not self._output_exists(output):
            return None
        self._db.execute("UPDATE outputs SET seen = ?, mtime_ns = ? WHERE output = ?",
                         (self.run_id, now_stamp, self._key(output)))
        self._maybe_commit()
        earlier = FileResult.from_dict(json.loads(result))
        earlier.input, earlier.output = input_path, earlier.output and output
        earlier.skipped, earlier.run_id = True, self.run_id
        return earlier

    def _output_exists(self, output: str) -> bool:
        """Whether ``output`` exists; a URL's folder is listed once for all its outputs (the plan
        gives them folder by folder), not asked about each."""
        if not storage.is_url(output):
            return os.path.isfile(output)
        folder, name = output.rsplit("/", 1)
        if name.startswith("."):  # listings leave hidden names out
            return storage.isfile(output)
        if self._listed[0] != folder:
            self._listed = (folder, frozenset(storage.listing(folder)[0]))
        return name in self._listed[1]

    def record(self, result: FileResult, output: str, fingerprint: Fingerprint) -> None:
        """Remember ``result`` (just made for ``output``) with its input's fingerprint."""
        self._db.execute(
            "INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (self._key(output), os.fsencode(result.input), fingerprint.size, fingerprint.mtime_ns, fingerprint.sha256,
             self.config, result.status, result.json(), self.run_id, self.run_id),
        )
        self._maybe_commit()

    def orphans(self) -> Iterator[Orphan]:
        """Outputs not planned by this run whose input no longer exists."""
        for out, inp in self._db.execute("SELECT output, input FROM outputs WHERE seen != ?", (self.run_id,)):
            path = os.fsdecode(inp)
            if not storage.exists(path):
                yield Orphan(storage.join(self.folder, os.fsdecode(out)), path)

    def forget(self, orphan: Orphan) -> None:
        """Remove an orphan's output file and its row."""
        storage.remove(orphan.output)
        self._db.execute("DELETE FROM outputs WHERE output = ?", (self._key(orphan.output),))
        self._maybe_commit()

    def _maybe_commit(self) -> None:
        if time.monotonic() - self._last_commit >= COMMIT_EVERY_S:
            self._db.commit()
            self._last_commit = time.monotonic()
            if self._remote is not None and self._last_commit - self._last_upload >= UPLOAD_EVERY_S:
                self._upload()

    def _upload(self) -> None:
        """Upload the committed file (no transaction is open: it is consistent on disk)."""
        if self._remote is not None:
            storage.upload(self._path, self._remote)
            self._last_upload = time.monotonic()

    def close(self) -> None:
        self._db.commit()
        self._db.close()
        self._upload()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
