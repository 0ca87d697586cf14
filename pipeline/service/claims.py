"""Claims on ledger rows: one process at a time creates an audio's voice; the others wait for it."""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ServiceError
from .ledger import Claim, ClaimLost, Ledger, LedgerRow, display_path

log = logging.getLogger("voiceprep.enroll")

LEASE_S = 30.0  # a claim's lease: the longest a process that died holds an audio up
POLL_MIN_S = 0.2  # ledger polls while another process holds an audio's claim
POLL_MAX_S = 5.0

CLAIMED = "VoiceClaimed"
CLAIMED_HINT = ("another voiceprep process sharing this ledger is still enrolling the same audio; "
                "run again once it has finished (its voice is then reused)")


def new_owner_id() -> str:
    """A claim owner: this host and process, plus a random part so that two enrollers never share one."""
    return f"{display_path(socket.gethostname())}:{os.getpid()}:{os.urandom(4).hex()}"


class Busy(Exception):
    """Another process holds the audio's claim, and the caller asked not to wait for it."""


@dataclass(frozen=True)
class Claimant:
    """Takes claims for ``owner`` with a lease of ``lease_s``; when another process holds a live one,
    polls the ledger (intervals growing by half from 0.2 s to 5 s on ``sleep``/``clock``) until that
    owner records a voice or releases the row or its lease expires, for at most ``timeout_s``."""

    ledger: Ledger
    owner: str
    lease_s: float
    timeout_s: float
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def take(self, audio_sha256: str, target_model: str, *, wait: bool, source: str) -> tuple[Claim, bool]:
        """The claim once it is ``granted`` or ``done``, and whether the row changed while this process
        waited for another's claim (that owner's outcome, e.g. a refusal, is then in the row).

        Raises Busy (a live claim, and ``wait`` is False) or ServiceError ``VoiceClaimed`` after ``timeout_s``.
        """
        since: float | None = None
        seen: LedgerRow | None = None
        interval = POLL_MIN_S
        while True:
            claim = self.ledger.claim(audio_sha256, target_model, self.owner, self.lease_s)
            if claim.state != "held":
                if claim.took_over:
                    log.warning("%s: the claim of %s expired; taking this audio over", source, claim.took_over)
                return claim, since is not None and claim.row != seen
            if not wait:
                raise Busy
            now = self.clock()
            if since is None:
                since, seen = now, claim.row
                log.info("%s: another process (%s) is enrolling this audio; waiting", source, claim.owner)
            left = since + self.timeout_s - now
            if left <= 0:
                raise ServiceError(CLAIMED, f"another voiceprep process ({claim.owner}) has held this audio for "
                                   f"{self.timeout_s:.0f} s; no voice was created", hint=CLAIMED_HINT, retryable=False)
            self.sleep(min(interval, left))
            interval = min(interval * 1.5, POLL_MAX_S)

    def lease(self, audio_sha256: str, target_model: str, renew_every_s: float) -> Lease:
        return Lease(self.ledger, audio_sha256, target_model, self.owner, self.lease_s, renew_every_s)


class Lease:
    """``owner``'s claim on one row, renewed every ``renew_every_s`` by a daemon thread until released,
    so that it outlives a slow create; ``lost`` turns True when another process took the row over."""

    def __init__(self, ledger: Ledger, audio_sha256: str, target_model: str, owner: str, lease_s: float,
                 renew_every_s: float) -> None:
        self.ledger, self.audio_sha256, self.target_model, self.owner = ledger, audio_sha256, target_model, owner
        self.lease_s = lease_s
        self.renew_every_s = renew_every_s
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="voiceprep-lease", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.renew_every_s):
            try:
                if not self.ledger.renew(self.audio_sha256, self.target_model, self.owner, self.lease_s):
                    self.lost = True
                    return
            except sqlite3.Error as exc:  # a busy or unreachable file: the next beat tries again
                log.warning("could not renew the claim on %s: %s", self.audio_sha256[:12], exc)

    def confirm(self) -> None:
        """Renew now and stamp the row before a create; raise ClaimLost when the row is no longer ours."""
        if self.lost or not self.ledger.renew(self.audio_sha256, self.target_model, self.owner, self.lease_s,
                                              touch=True):
            self.lost = True
            raise ClaimLost(f"{self.audio_sha256[:12]} / {self.target_model}")

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.ledger.release(self.audio_sha256, self.target_model, self.owner)
        except sqlite3.Error as exc:  # the claim then simply expires
            log.warning("could not release the claim on %s: %s", self.audio_sha256[:12], exc)
