"""The enrollment ledger (SQLite): audio content hash -> voice id, so no audio is enrolled twice."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LEDGER_NAME = "voiceprep-ledger.sqlite"

PENDING = "pending"  # written BEFORE create_voice: the answer may be lost, reconcile on the next run
FAILED = "failed"  # the service refused the audio (code/message kept)
DELETED = "deleted"  # the voice was deleted through voiceprep
# and the service's own statuses once the voice id is known: DEPLOYING, OK, UNDEPLOYED

SCHEMA = """
CREATE TABLE IF NOT EXISTS voices (
    audio_sha256  TEXT NOT NULL,
    target_model  TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    voice_id      TEXT,
    status        TEXT NOT NULL,
    url           TEXT,
    source        TEXT,
    request_ids   TEXT NOT NULL DEFAULT '[]',
    error_code    TEXT,
    error_message TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (audio_sha256, target_model)
);
CREATE INDEX IF NOT EXISTS voices_voice_id ON voices (voice_id);
"""


def display_path(path: str | os.PathLike[str]) -> str:
    """A path (or any text holding one) safe to print and store as UTF-8: the bytes of a name that is
    not UTF-8 are shown as ``\\xNN`` (the real path stays the one to open)."""
    raw = os.fspath(path)
    try:
        return os.fsencode(raw).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no file name decoded to
        return raw.encode("utf-8", "backslashreplace").decode("utf-8")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class LedgerRow:
    """One audio (by SHA-256 of the uploaded bytes) enrolled for one target model."""

    audio_sha256: str
    target_model: str
    prefix: str
    voice_id: str | None
    status: str
    url: str | None
    source: str | None
    request_ids: tuple[str, ...]
    error_code: str | None
    error_message: str | None
    created_at: str
    updated_at: str

    def as_dict(self, *, with_url: bool = False) -> dict[str, Any]:
        d = asdict(self)
        d["request_ids"] = list(self.request_ids)
        if not with_url:
            d.pop("url")  # a presigned URL is a (time-limited) credential: kept on disk, not printed
        return d


class Ledger:
    """SQLite file of enrollments. Every write is committed at once (WAL journal), so a crash loses
    nothing that was written; a row in ``pending`` means a create may have happened: reconcile it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r})"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reads ---

    @staticmethod
    def _row(r: sqlite3.Row | None) -> LedgerRow | None:
        if r is None:
            return None
        d = dict(r)
        d["request_ids"] = tuple(json.loads(d["request_ids"] or "[]"))
        return LedgerRow(**d)

    def get(self, audio_sha256: str, target_model: str) -> LedgerRow | None:
        with self._lock:
            cur = self._db.execute(
                "SELECT * FROM voices WHERE audio_sha256 = ? AND target_model = ?", (audio_sha256, target_model)
            )
            return self._row(cur.fetchone())

    def by_voice(self, voice_id: str) -> LedgerRow | None:
        with self._lock:
            return self._row(self._db.execute("SELECT * FROM voices WHERE voice_id = ?", (voice_id,)).fetchone())

    def rows(self) -> list[LedgerRow]:
        with self._lock:
            cur = self._db.execute("SELECT * FROM voices ORDER BY created_at, audio_sha256")
            return [r for r in (self._row(x) for x in cur.fetchall()) if r is not None]

    def known_voice_ids(self) -> set[str]:
        with self._lock:
            cur = self._db.execute("SELECT voice_id FROM voices WHERE voice_id IS NOT NULL")
            return {str(r[0]) for r in cur.fetchall()}

    # --- writes (each one its own committed transaction) ---

    def _append_rid(self, current: str | None, request_id: str | None) -> str:
        ids = list(json.loads(current or "[]"))
        if request_id and request_id not in ids:
            ids.append(request_id)
        return json.dumps(ids)

    def mark_pending(
        self, audio_sha256: str, target_model: str, prefix: str, url: str, source: str | None
    ) -> None:
        """Record the intent to create a voice from this audio at ``url`` (committed before the call)."""
        now = _now()
        source = display_path(source) if source is not None else None
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    """INSERT INTO voices (audio_sha256, target_model, prefix, voice_id, status, url, source,
                           request_ids, error_code, error_message, created_at, updated_at)
                       VALUES (?, ?, ?, NULL, ?, ?, ?, '[]', NULL, NULL, ?, ?)
                       ON CONFLICT (audio_sha256, target_model) DO UPDATE SET
                           prefix = excluded.prefix, voice_id = NULL, status = excluded.status, url = excluded.url,
                           source = excluded.source, error_code = NULL, error_message = NULL,
                           updated_at = excluded.updated_at""",
                    (audio_sha256, target_model, prefix, PENDING, url, source, now, now),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def record_voice(
        self, audio_sha256: str, target_model: str, voice_id: str, status: str, request_id: str | None = None
    ) -> None:
        """The service named the voice created from this audio."""
        self._update(audio_sha256, target_model, request_id, voice_id=voice_id, status=status,
                     error_code=None, error_message=None)

    def mark_failed(
        self, audio_sha256: str, target_model: str, code: str, message: str, request_id: str | None = None
    ) -> None:
        self._update(audio_sha256, target_model, request_id, status=FAILED, error_code=code, error_message=message)

    def add_request_id(self, audio_sha256: str, target_model: str, request_id: str | None) -> None:
        self._update(audio_sha256, target_model, request_id)

    def set_status(self, voice_id: str, status: str, request_id: str | None = None,
                   error_code: str | None = None, error_message: str | None = None) -> None:
        row = self.by_voice(voice_id)
        if row is not None:
            self._update(row.audio_sha256, row.target_model, request_id, status=status,
                         error_code=error_code, error_message=error_message)

    def _update(self, audio_sha256: str, target_model: str, request_id: str | None, **values: Any) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "SELECT request_ids FROM voices WHERE audio_sha256 = ? AND target_model = ?",
                    (audio_sha256, target_model),
                )
                r = cur.fetchone()
                if r is None:
                    self._db.execute("ROLLBACK")
                    raise KeyError(f"no ledger row for {audio_sha256[:12]} / {target_model}")
                values["request_ids"] = self._append_rid(r[0], request_id)
                values["updated_at"] = _now()
                cols = ", ".join(f"{k} = ?" for k in values)
                self._db.execute(
                    f"UPDATE voices SET {cols} WHERE audio_sha256 = ? AND target_model = ?",  # noqa: S608 - fixed names
                    (*values.values(), audio_sha256, target_model),
                )
                self._db.execute("COMMIT")
            except KeyError:
                raise
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
