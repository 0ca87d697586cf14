"""The enrollment ledger (SQLite): audio content hash -> voice id, so no audio is enrolled twice."""

from __future__ import annotations

import calendar
import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger("voiceprep.ledger")

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
CREATE TABLE IF NOT EXISTS claims (
    audio_sha256  TEXT NOT NULL,
    target_model  TEXT NOT NULL,
    owner         TEXT NOT NULL,
    expires_at    REAL NOT NULL,
    PRIMARY KEY (audio_sha256, target_model)
);
CREATE TABLE IF NOT EXISTS rate_buckets (
    name          TEXT PRIMARY KEY,
    tokens        REAL NOT NULL,
    updated_at    REAL NOT NULL
);
"""

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def display_path(path: str | os.PathLike[str]) -> str:
    """A path (or any text holding one) safe to print and store as UTF-8: the bytes of a name that is
    not UTF-8 are shown as ``\\xNN`` (the real path stays the one to open)."""
    raw = os.fspath(path)
    try:
        return os.fsencode(raw).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no file name decoded to
        return raw.encode("utf-8", "backslashreplace").decode("utf-8")


class ClaimLost(Exception):
    """Another process took over this row's claim (ours had expired): this process must not create."""


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

    @property
    def has_voice(self) -> bool:
        """The row names a voice made from this audio (nothing is to be created for it)."""
        return self.voice_id is not None and self.status not in (PENDING, FAILED, DELETED)


@dataclass(frozen=True)
class Claim:
    """What ``Ledger.claim`` found, read in the same transaction that took (or not) the claim.

    ``state``: ``granted`` (this owner holds the row's lease now; ``took_over`` names an expired
    claim's owner it replaced), ``held`` (``owner`` holds a live lease until ``expires_at``), or
    ``done`` (``row`` already names a voice: nothing to claim).
    """

    state: Literal["granted", "held", "done"]
    row: LedgerRow | None
    owner: str | None = None
    expires_at: float | None = None
    took_over: str | None = None


class Ledger:
    """SQLite file of enrollments. Every write is committed at once (WAL journal), so a crash loses
    nothing that was written; a row in ``pending`` means a create may have happened: reconcile it.

    Processes sharing the file coordinate through it: a claim (owner, lease expiry) on an audio's
    row before creating its voice, and one token bucket per service for their requests. ``clock``
    is the wall clock (seconds since the epoch) that leases, buckets and timestamps are read with;
    injectable so that tests never wait.
    """

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
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

    def age_s(self, row: LedgerRow) -> float:
        """Seconds since the row was last written (its ``updated_at``, to the second)."""
        return self.clock() - calendar.timegm(time.strptime(row.updated_at, TIME_FORMAT))

    def known_voice_ids(self) -> set[str]:
        with self._lock:
            cur = self._db.execute("SELECT voice_id FROM voices WHERE voice_id IS NOT NULL")
            return {str(r[0]) for r in cur.fetchall()}

    # --- writes (each one its own committed transaction) ---

    def _now(self) -> str:
        return time.strftime(TIME_FORMAT, time.gmtime(self.clock()))

    @contextlib.contextmanager
    def _immediate(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction (the write lock taken at once, so a read-then-write decision is
        never made on a state another process changes in between), committed on exit."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _append_rid(self, current: str | None, request_id: str | None) -> str:
        ids = list(json.loads(current or "[]"))
        if request_id and request_id not in ids:
            ids.append(request_id)
        return json.dumps(ids)

    @staticmethod
    def _owns(db: sqlite3.Connection, audio_sha256: str, target_model: str, owner: str) -> bool:
        r = db.execute("SELECT owner FROM claims WHERE audio_sha256 = ? AND target_model = ?",
                       (audio_sha256, target_model)).fetchone()
        return r is not None and r[0] == owner

    def mark_pending(
        self, audio_sha256: str, target_model: str, prefix: str, url: str, source: str | None,
        owner: str | None = None,
    ) -> None:
        """Record the intent to create a voice from this audio at ``url`` (committed before the call).
        With ``owner``, only while that owner holds the row's claim (else ClaimLost, nothing written)."""
        now = self._now()
        source = display_path(source) if source is not None else None
        with self._immediate() as db:
            if owner is not None and not self._owns(db, audio_sha256, target_model, owner):
                raise ClaimLost(f"{audio_sha256[:12]} / {target_model}")
            db.execute(
                """INSERT INTO voices (audio_sha256, target_model, prefix, voice_id, status, url, source,
                       request_ids, error_code, error_message, created_at, updated_at)
                   VALUES (?, ?, ?, NULL, ?, ?, ?, '[]', NULL, NULL, ?, ?)
                   ON CONFLICT (audio_sha256, target_model) DO UPDATE SET
                       prefix = excluded.prefix, voice_id = NULL, status = excluded.status, url = excluded.url,
                       source = excluded.source, error_code = NULL, error_message = NULL,
                       updated_at = excluded.updated_at""",
                (audio_sha256, target_model, prefix, PENDING, url, source, now, now),
            )

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
        with self._immediate() as db:
            r = db.execute(
                "SELECT request_ids FROM voices WHERE audio_sha256 = ? AND target_model = ?",
                (audio_sha256, target_model),
            ).fetchone()
            if r is None:
                raise KeyError(f"no ledger row for {audio_sha256[:12]} / {target_model}")
            values["request_ids"] = self._append_rid(r[0], request_id)
            values["updated_at"] = self._now()
            cols = ", ".join(f"{k} = ?" for k in values)
            db.execute(
                f"UPDATE voices SET {cols} WHERE audio_sha256 = ? AND target_model = ?",  # noqa: S608 - fixed names
                (*values.values(), audio_sha256, target_model),
            )

    # --- claims: one process at a time creates the voice of an audio ---

    def claim(self, audio_sha256: str, target_model: str, owner: str, lease_s: float) -> Claim:
        """Take the row's claim for ``lease_s`` unless the row already names a voice or another owner
        holds a live claim; the row is read in the same IMMEDIATE transaction as the decision."""
        with self._immediate() as db:
            row = self._row(db.execute("SELECT * FROM voices WHERE audio_sha256 = ? AND target_model = ?",
                                       (audio_sha256, target_model)).fetchone())
            if row is not None and row.has_voice:
                return Claim("done", row)
            held = db.execute("SELECT owner, expires_at FROM claims WHERE audio_sha256 = ? AND target_model = ?",
                              (audio_sha256, target_model)).fetchone()
            now = self.clock()
            if held is not None and held[0] != owner and held[1] > now:
                return Claim("held", row, owner=str(held[0]), expires_at=float(held[1]))
            db.execute(
                """INSERT INTO claims (audio_sha256, target_model, owner, expires_at) VALUES (?, ?, ?, ?)
                   ON CONFLICT (audio_sha256, target_model) DO UPDATE SET
                       owner = excluded.owner, expires_at = excluded.expires_at""",
                (audio_sha256, target_model, owner, now + lease_s),
            )
        took_over = str(held[0]) if held is not None and held[0] != owner else None
        return Claim("granted", row, owner=owner, expires_at=now + lease_s, took_over=took_over)

    def renew(self, audio_sha256: str, target_model: str, owner: str, lease_s: float, *, touch: bool = False) -> bool:
        """Extend ``owner``'s claim to ``lease_s`` from now; False when another owner has taken the row.
        ``touch`` also stamps the row's ``updated_at`` (a create is about to be sent)."""
        with self._immediate() as db:
            now = self.clock()
            cur = db.execute("UPDATE claims SET expires_at = ? WHERE audio_sha256 = ? AND target_model = ? AND owner = ?",
                             (now + lease_s, audio_sha256, target_model, owner))
            if cur.rowcount != 1:
                return False
            if touch:
                db.execute("UPDATE voices SET updated_at = ? WHERE audio_sha256 = ? AND target_model = ?",
                           (self._now(), audio_sha256, target_model))
            return True

    def release(self, audio_sha256: str, target_model: str, owner: str) -> None:
        """Give the claim up (only ``owner``'s own)."""
        with self._immediate() as db:
            db.execute("DELETE FROM claims WHERE audio_sha256 = ? AND target_model = ? AND owner = ?",
                       (audio_sha256, target_model, owner))

    def claim_of(self, audio_sha256: str, target_model: str) -> tuple[str, float] | None:
        """The row's claim as (owner, expires_at), live or not; None when unclaimed."""
        with self._lock:
            r = self._db.execute("SELECT owner, expires_at FROM claims WHERE audio_sha256 = ? AND target_model = ?",
                                 (audio_sha256, target_model)).fetchone()
        return (str(r[0]), float(r[1])) if r is not None else None

    # --- a token bucket the processes using this ledger share ---

    def take_token(self, name: str, rate_per_s: float, burst: float) -> float | None:
        """Reserve one token of bucket ``name`` (refilled at ``rate_per_s`` up to ``burst``; it may go
        into debt, so callers queue in order) and return the seconds to wait before using it; None
        when the file cannot be written (the caller then paces itself alone)."""
        try:
            with self._immediate() as db:
                r = db.execute("SELECT tokens, updated_at FROM rate_buckets WHERE name = ?", (name,)).fetchone()
                now = self.clock()
                # a clock that stepped back refills nothing, and never stalls the bucket
                tokens = burst if r is None else min(burst, float(r[0]) + max(now - float(r[1]), 0.0) * rate_per_s)
                tokens -= 1.0
                db.execute(
                    """INSERT INTO rate_buckets (name, tokens, updated_at) VALUES (?, ?, ?)
                       ON CONFLICT (name) DO UPDATE SET tokens = excluded.tokens, updated_at = excluded.updated_at""",
                    (name, tokens, now),
                )
        except sqlite3.Error as exc:
            log.warning("the shared rate limit in %s is out of reach (%s); pacing this process alone", self.path, exc)
            return None
        return -tokens / rate_per_s if tokens < 0 else 0.0
