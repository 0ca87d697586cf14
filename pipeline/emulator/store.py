"""SQLite state of the local emulator: voices and temporary uploads, kept across restarts."""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS voices (
    voice_id TEXT PRIMARY KEY,
    prefix TEXT NOT NULL,
    target_model TEXT NOT NULL,
    url TEXT NOT NULL,
    status TEXT NOT NULL,
    outcome TEXT NOT NULL,
    created REAL NOT NULL,
    modified REAL NOT NULL,
    ready_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS voices_prefix ON voices (prefix, created);
CREATE TABLE IF NOT EXISTS uploads (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL
);
"""


def gmt(ts: float) -> str:
    """The service's timestamp format, ``YYYY-MM-DD HH:MM:SS`` (UTC here)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


@dataclass(frozen=True)
class Voice:
    """One enrolled voice; ``status`` is DEPLOYING, OK or UNDEPLOYED."""

    voice_id: str
    prefix: str
    target_model: str
    url: str
    status: str
    created: float
    modified: float

    def list_item(self) -> dict[str, str]:
        return {
            "voice_id": self.voice_id,
            "gmt_create": gmt(self.created),
            "gmt_modified": gmt(self.modified),
            "status": self.status,
        }

    def query_output(self) -> dict[str, str]:
        return {
            "gmt_create": gmt(self.created),
            "resource_link": self.url,
            "target_model": self.target_model,
            "gmt_modified": gmt(self.modified),
            "status": self.status,
        }


@dataclass(frozen=True)
class Upload:
    """A file put in temporary storage through the form upload; bound to ``model`` until ``expires``."""

    key: str
    model: str
    path: str
    size: int
    expires: float


class Store:
    """Voices and uploads in one SQLite file; a DEPLOYING voice settles lazily when read after ``ready_at``.

    Used from the emulator's event-loop thread only (every statement is short). ``clock`` gives the
    seconds since the epoch that stamps, deploy ends and expiries are compared with.
    """

    def __init__(self, data_dir: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.data_dir = data_dir
        self.clock = clock
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "uploads").mkdir(exist_ok=True)
        self.db = sqlite3.connect(data_dir / "emulator.sqlite3", isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def secret(self) -> bytes:
        """The signing secret for upload policies, created once and kept."""
        row = self.db.execute("SELECT value FROM meta WHERE name = 'policy_secret'").fetchone()
        if row:
            return bytes.fromhex(row[0])
        value = secrets.token_bytes(32)
        self.db.execute("INSERT INTO meta (name, value) VALUES ('policy_secret', ?)", (value.hex(),))
        return value

    # voices ---------------------------------------------------------------------------------

    def _settle(self, now: float) -> None:
        self.db.execute(
            "UPDATE voices SET status = outcome, modified = ready_at WHERE status = 'DEPLOYING' AND ready_at <= ?",
            (now,),
        )

    def count(self) -> int:
        row = self.db.execute("SELECT COUNT(*) FROM voices").fetchone()
        return int(row[0])

    def add(self, voice_id: str, prefix: str, target_model: str, url: str, ready_at: float, outcome: str) -> Voice:
        now = self.clock()
        self.db.execute(
            "INSERT INTO voices (voice_id, prefix, target_model, url, status, outcome, created, modified, ready_at)"
            " VALUES (?, ?, ?, ?, 'DEPLOYING', ?, ?, ?, ?)",
            (voice_id, prefix, target_model, url, outcome, now, now, ready_at),
        )
        return Voice(voice_id, prefix, target_model, url, "DEPLOYING", now, now)

    def get(self, voice_id: str) -> Voice | None:
        self._settle(self.clock())
        row = self.db.execute(
            "SELECT voice_id, prefix, target_model, url, status, created, modified FROM voices WHERE voice_id = ?",
            (voice_id,),
        ).fetchone()
        return Voice(*row) if row else None

    def page(self, prefix: str | None, page_index: int, page_size: int) -> list[Voice]:
        self._settle(self.clock())
        sql = "SELECT voice_id, prefix, target_model, url, status, created, modified FROM voices"
        args: tuple[object, ...] = ()
        if prefix:
            sql += " WHERE prefix = ?"
            args = (prefix,)
        sql += " ORDER BY created DESC, voice_id LIMIT ? OFFSET ?"
        rows = self.db.execute(sql, (*args, page_size, page_index * page_size)).fetchall()
        return [Voice(*r) for r in rows]

    def redeploy(self, voice_id: str, url: str, ready_at: float, outcome: str) -> bool:
        cur = self.db.execute(
            "UPDATE voices SET url = ?, status = 'DEPLOYING', outcome = ?, modified = ?, ready_at = ? WHERE voice_id = ?",
            (url, outcome, self.clock(), ready_at, voice_id),
        )
        return cur.rowcount > 0

    def delete(self, voice_id: str) -> bool:
        cur = self.db.execute("DELETE FROM voices WHERE voice_id = ?", (voice_id,))
        return cur.rowcount > 0

    # uploads --------------------------------------------------------------------------------

    def put_upload(self, key: str, model: str, path: str, size: int, ttl_s: float) -> None:
        now = self.clock()
        self.db.execute(
            "INSERT OR REPLACE INTO uploads (key, model, path, size, created, expires) VALUES (?, ?, ?, ?, ?, ?)",
            (key, model, path, size, now, now + ttl_s),
        )

    def upload(self, key: str) -> Upload | None:
        row = self.db.execute(
            "SELECT key, model, path, size, expires FROM uploads WHERE key = ? AND expires > ?", (key, self.clock())
        ).fetchone()
        return Upload(*row) if row else None

    def upload_exists(self, key: str) -> bool:
        return self.upload(key) is not None

    def purge_uploads(self) -> int:
        """Delete expired uploads and their files; returns how many."""
        now = self.clock()
        rows = self.db.execute("SELECT key, path FROM uploads WHERE expires <= ?", (now,)).fetchall()
        for _key, path in rows:
            Path(path).unlink(missing_ok=True)
        self.db.execute("DELETE FROM uploads WHERE expires <= ?", (now,))
        return len(rows)
