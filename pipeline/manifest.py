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

from .pipeline import Pipeline
from .plan import STATE_DIR
from .report import FileResult

MANIFEST_NAME = "manifest.sqlite"
COMMIT_EVERY_S = 0.5  # a crash loses at most this much bookkeeping: those files are simply redone

SCHEMA = """
CREATE TABLE IF NOT EXISTS outputs (
    output BLOB PRIMARY KEY,   -- the output path relative to the folder (file-system bytes)
    input BLOB NOT NULL,       -- the input path as the run named it (file-system bytes)
    size INTEGER NOT NULL,     -- the input's size and modification time when it was processed
    mtime_ns INTEGER NOT NULL,
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


def content_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Fingerprint:
    """What an input was when it was processed: size, modification time, content hash."""

    size: int
    mtime_ns: int
    sha256: str

    @classmethod
    def of(cls, path: str) -> Fingerprint:
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns, content_sha256(path))


@dataclass(frozen=True)
class Orphan:
    """An output whose input no longer exists."""

    output: str
    input: str


class Manifest:
    """The state of one output folder (``FOLDER/.voiceprep/manifest.sqlite``), written only by the
    process that coordinates a batch. Rows are committed every ``COMMIT_EVERY_S`` and on close."""

    def __init__(self, folder: str, *, run_id: str, config: str) -> None:
        self.folder = folder
        self.run_id = run_id
        self.config = config
        state = os.path.join(folder, STATE_DIR)
        os.makedirs(state, exist_ok=True)
        # the rollback journal (not WAL): it works on network file systems, with one writer
        self._db = sqlite3.connect(os.path.join(state, MANIFEST_NAME), timeout=30.0)
        self._db.executescript(SCHEMA)
        self._db.commit()
        self._last_commit = time.monotonic()

    def _key(self, output: str) -> bytes:
        return os.fsencode(os.path.relpath(output, self.folder))

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
            st = os.stat(input_path)
        except OSError:
            return None
        if st.st_size != size:
            return None
        if st.st_mtime_ns != mtime_ns:
            try:
                if content_sha256(input_path) != sha:
                    return None
            except OSError:
                return None
        if status == "ok" and not os.path.isfile(output):
            return None
        self._db.execute("UPDATE outputs SET seen = ?, mtime_ns = ? WHERE output = ?",
                         (self.run_id, st.st_mtime_ns, self._key(output)))
        self._maybe_commit()
        earlier = FileResult.from_dict(json.loads(result))
        earlier.input, earlier.output = input_path, earlier.output and output
        earlier.skipped, earlier.run_id = True, self.run_id
        return earlier

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
            if not os.path.exists(path):
                yield Orphan(os.path.join(self.folder, os.fsdecode(out)), path)

    def forget(self, orphan: Orphan) -> None:
        """Remove an orphan's output file and its row."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(orphan.output)
        self._db.execute("DELETE FROM outputs WHERE output = ?", (self._key(orphan.output),))
        self._maybe_commit()

    def _maybe_commit(self) -> None:
        if time.monotonic() - self._last_commit >= COMMIT_EVERY_S:
            self._db.commit()
            self._last_commit = time.monotonic()

    def close(self) -> None:
        self._db.commit()
        self._db.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
