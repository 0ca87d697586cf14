"""Enrollment of clean clips: ledger first, upload, create (reconciled, never duplicated), wait, record."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx

from . import errors as E
from .claims import LEASE_S, Busy, Claimant, Lease, new_owner_id
from .client import DEPLOYING, READY, REFUSED, EnrollmentClient
from .errors import ServiceError
from .ledger import DELETED, FAILED, LEDGER_NAME, PENDING, ClaimLost, Ledger, LedgerRow, display_path
from .ratelimit import SharedTokenBucket, TokenStore
from .settings import EnrollSettings, ServiceSettings, check_prefix, check_target_model
from .upload import Uploader, make_uploader

log = logging.getLogger("voiceprep.enroll")

Action = Literal["created", "existing", "reconciled", "none"]

RECONCILE_MIN_INTERVAL_S = 1.0  # list_voice polls while waiting for the outcome of an unanswered create
RECONCILE_MAX_INTERVAL_S = 30.0


@dataclass
class EnrollResult:
    """The outcome for one clip: ``status`` "ok" (a voice exists for it) or "rejected" (``code``, ``hint``).

    ``action`` says how the voice id was obtained: ``created`` now, ``existing`` in the ledger, or
    ``reconciled`` (a create whose answer was lost, found again through list_voice + query_voice).
    """

    input: str
    status: Literal["ok", "rejected"]
    audio_sha256: str
    target_model: str
    prefix: str
    voice_id: str | None = None
    voice_status: str | None = None
    action: Action = "none"
    code: str | None = None
    message: str = ""
    hint: str = ""
    request_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "status": self.status,
            "voice_id": self.voice_id,
            "voice_status": self.voice_status,
            "action": self.action,
            "target_model": self.target_model,
            "prefix": self.prefix,
            "audio_sha256": self.audio_sha256,
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "request_ids": list(self.request_ids),
        }

    def line(self) -> str:
        if self.status == "ok":
            return f"{self.input}: {self.voice_id} {self.voice_status} ({self.action})"
        tail = f" ({self.hint})" if self.hint else ""
        return f"{self.input}: {self.code}: {self.message}{tail}"

    def fail(self, exc: ServiceError) -> EnrollResult:
        self.status = "rejected"
        self.code, self.message, self.hint = exc.code, exc.message, exc.hint
        if exc.request_id and exc.request_id not in self.request_ids:
            self.request_ids.append(exc.request_id)
        return self


def audio_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _strip_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _answered(exc: ServiceError) -> bool:
    """Whether the service itself answered the failed request (a 4xx/5xx with a body, not a gateway's
    502/504): it is then done with it. No answer, or a 2xx without a voice id, may still make a voice."""
    status = exc.http_status
    return status is not None and status not in (502, 504) and not 200 <= status < 300


def same_audio(resource_link: str | None, url: str | None, sha: str) -> bool:
    """Whether a voice's ``resource_link`` is the upload of this audio: the same URL (a presigned URL
    may have been signed again: compared without its query), or an object named after the hash."""
    if not resource_link:
        return False
    if url and (resource_link == url or _strip_query(resource_link) == _strip_query(url)):
        return True
    return sha in urlsplit(resource_link).path


class Enroller:
    """Enrolls clips through ``client``, ``uploader`` and ``ledger``, never creating a voice twice.

    For each clip: claim the SHA-256 of its bytes in the ledger (a voice already made is reused; a
    live claim of another process is waited for; a ``pending`` row, left by a crash or a lost
    answer, is reconciled first); count the quota; upload; write a ``pending`` row; call
    create_voice; record the voice id; release the claim. After an ambiguous failure of
    create_voice (timeout, dropped connection, 5xx) the voices with the prefix are listed and
    queried for a ``resource_link`` of this audio before any new attempt; when no answer came at
    all, the list is polled until the voice appears or ``reconcile_timeout_s`` passes, so a create
    still running on the service is found instead of being made twice.

    The claim is a lease of ``lease_s`` renewed every ``renew_every_s`` while this process works, so
    a process that dies holds an audio up for at most ``lease_s``; a process that finds another's
    live claim polls the ledger (intervals growing from 0.2 s to 5 s) until that owner records a
    voice or its lease expires, and gives up after ``claim_timeout_s`` with ``VoiceClaimed``.

    ``sleep`` and ``clock`` are injectable so that tests never wait (the ledger has its own clock).
    """

    def __init__(
        self,
        client: EnrollmentClient,
        uploader: Uploader,
        ledger: Ledger,
        *,
        target_model: str,
        prefix: str,
        wait: bool = True,
        ready_timeout_s: float = 600.0,
        poll_interval_s: float = 5.0,
        create_attempts: int = 3,
        reconcile_delay_s: float = 15.0,
        reconcile_timeout_s: float = 120.0,
        quota: int = 1000,
        create_options: Mapping[str, Any] | None = None,
        lease_s: float = LEASE_S,
        renew_every_s: float | None = None,
        claim_timeout_s: float | None = None,
        owner: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target_model = check_target_model(target_model)
        self.prefix = check_prefix(prefix)
        self.client = client
        self.uploader = uploader
        self.ledger = ledger
        self.wait = wait
        self.ready_timeout_s = ready_timeout_s
        self.poll_interval_s = poll_interval_s
        self.create_attempts = create_attempts
        self.reconcile_delay_s = reconcile_delay_s
        self.reconcile_timeout_s = reconcile_timeout_s
        self.quota = quota
        self.create_options = dict(create_options or {})
        self.renew_every_s = renew_every_s if renew_every_s is not None else lease_s / 3
        if claim_timeout_s is None:  # the longest an owner may work on one clip: upload, creates, reconciling
            span = (client.max_retries + 1) * client.timeout_s
            claim_timeout_s = lease_s + (create_attempts + 2) * (span + reconcile_delay_s + reconcile_timeout_s)
        self.claims = Claimant(ledger, owner or new_owner_id(), lease_s, claim_timeout_s, sleep, clock)
        self._sleep = sleep
        self._clock = clock
        self._remaining: int | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Enroller({self.client!r}, uploader={self.uploader.method!r}, {self.ledger!r}, prefix={self.prefix!r})"

    # --- batch ---

    def enroll_files(self, paths: Iterable[str | os.PathLike[str]]) -> list[EnrollResult]:
        """Submit every file (upload + create), then wait for all of them to be ready."""
        results = self.submit_files(paths)
        if self.wait:
            results = [self.finish(r) for r in results]
        return results

    def enroll_bytes(self, data: bytes, *, source: str, filename: str) -> EnrollResult:
        result = self.submit(data, source=source, filename=filename)
        return self.finish(result) if self.wait else result

    def submit_files(self, paths: Iterable[str | os.PathLike[str]]) -> list[EnrollResult]:
        """Submit every file. One whose audio another process is enrolling at that moment is put off
        until the others are submitted, then waited for (its voice reused, or made here if that
        process died), so that processes sharing a ledger work on different clips."""
        items = list(paths)
        first = [self.try_submit_file(p) for p in items]
        return [r if r is not None else self.submit_file(p) for p, r in zip(items, first)]

    def _read(self, path: str | os.PathLike[str]) -> bytes | EnrollResult:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            r = EnrollResult(display_path(path), "rejected", "", self.target_model, self.prefix)
            return r.fail(ServiceError("Audio.DecoderError", f"cannot read the file: {exc.strerror}",
                                       hint="check the path and its permissions", retryable=False))

    def submit_file(self, path: str | os.PathLike[str]) -> EnrollResult:
        data = self._read(path)
        if isinstance(data, EnrollResult):
            return data
        return self.submit(data, source=str(Path(path)), filename=Path(path).name)

    def try_submit_file(self, path: str | os.PathLike[str]) -> EnrollResult | None:
        """As ``submit_file``, but None at once when another process holds the audio's claim."""
        data = self._read(path)
        if isinstance(data, EnrollResult):
            return data
        return self.try_submit(data, source=str(Path(path)), filename=Path(path).name)

    # --- one clip ---

    def submit(self, data: bytes, *, source: str, filename: str) -> EnrollResult:
        """Make sure a voice exists (or is being made) for these bytes; never raises a ServiceError.
        ``source`` is shown and stored with the bytes of a non-UTF-8 name as ``\\xNN``."""
        sha = audio_sha256(data)
        result = EnrollResult(display_path(source), "ok", sha, self.target_model, self.prefix)
        with self._lock:
            try:
                return self._submit(data, sha, filename, result, wait=True)
            except ServiceError as exc:
                return result.fail(exc)

    def try_submit(self, data: bytes, *, source: str, filename: str) -> EnrollResult | None:
        """As ``submit``, but None at once (nothing done) when another process holds the audio's claim."""
        sha = audio_sha256(data)
        result = EnrollResult(display_path(source), "ok", sha, self.target_model, self.prefix)
        with self._lock:
            try:
                return self._submit(data, sha, filename, result, wait=False)
            except Busy:
                return None
            except ServiceError as exc:
                return result.fail(exc)

    def _submit(self, data: bytes, sha: str, filename: str, result: EnrollResult, *, wait: bool) -> EnrollResult:
        while True:
            claim, changed = self.claims.take(sha, self.target_model, wait=wait, source=result.input)
            row = claim.row
            if row is not None:
                result.request_ids = list(row.request_ids)
            if claim.state == "done" and row is not None:
                done = self._from_ledger(row, result)
                if done is not None:
                    return done
                continue  # the service deleted that voice: claim the audio to enroll it again
            lease = self.claims.lease(sha, self.target_model, self.renew_every_s)
            try:
                if changed and row is not None and row.status == FAILED:
                    # the other process's create was refused while this one waited: that answer stands
                    raise ServiceError(row.error_code or E.UNKNOWN, row.error_message or "", retryable=False)
                return self._create(data, sha, filename, result, row, lease)
            except ClaimLost:
                log.warning("%s: another process took this audio over; waiting for its outcome", result.input)
                if not wait:
                    raise Busy from None
            finally:
                lease.release()

    def _create(
        self, data: bytes, sha: str, filename: str, result: EnrollResult, row: LedgerRow | None, lease: Lease
    ) -> EnrollResult:
        """With the audio's claim held: reconcile a pending row, then upload, create and record."""
        if row is not None and row.status == PENDING:
            found = self._await_pending(row)
            if found is not None:
                return self._adopt(found, sha, result, "reconciled")
        self._check_quota()
        suffix = Path(filename).suffix.lower() or ".wav"
        uploaded = self.uploader.upload(data, object_name=f"{sha}{suffix}", filename=filename)
        self.ledger.mark_pending(sha, self.target_model, self.prefix, uploaded.url, result.input,
                                 owner=self.claims.owner)
        attempt = 0
        while True:
            attempt += 1
            lease.confirm()  # never a create without the claim; stamps the row with the time of this attempt
            try:
                voice_id = self.client.create_voice(
                    self.target_model, self.prefix, uploaded.url, **self.create_options
                )
            except ServiceError as exc:
                if exc.request_id:
                    self.ledger.add_request_id(sha, self.target_model, exc.request_id)
                if exc.code == "Throttling.AllocationQuota":
                    self._remaining = 0
                if not exc.ambiguous:
                    self.ledger.mark_failed(sha, self.target_model, exc.code, exc.message, exc.request_id)
                    raise
                log.warning("create_voice for %s failed ambiguously (%s); reconciling", result.input, exc.code)
                found = self._await_outcome(sha, uploaded.url, exc)
                if found is not None:
                    return self._adopt(found, sha, result, "reconciled")
                if not exc.retryable or attempt >= self.create_attempts:
                    if _answered(exc):  # the service's last word, reconciled: it made no voice
                        self.ledger.mark_failed(sha, self.target_model, exc.code, exc.message, exc.request_id)
                    raise  # unanswered: the row stays pending and is reconciled again before any create
                self._sleep(self.client.backoff.delay(attempt, exc.retry_after_s))
                continue
            rid = self.client.last_request_id
            self.ledger.record_voice(sha, self.target_model, voice_id, DEPLOYING, rid)
            if self._remaining is not None:
                self._remaining -= 1
            if rid:
                result.request_ids.append(rid)
            result.voice_id, result.voice_status, result.action = voice_id, DEPLOYING, "created"
            return result

    def _from_ledger(self, row: LedgerRow, result: EnrollResult) -> EnrollResult | None:
        """The voice the ledger names for this audio, checked with query_voice; None when the service
        deleted it (the row is then marked deleted and the audio may be enrolled again)."""
        if row.voice_id is None:
            return None
        try:
            info = self.client.query_voice(row.voice_id)
        except ServiceError as exc:
            if exc.code == "BadRequest.ResourceNotExist":  # deleted on the service (unused for a year...)
                self.ledger.set_status(row.voice_id, DELETED, exc.request_id)
                return None
            raise
        status = str(info.get("status", row.status))
        if status != row.status:
            self.ledger.set_status(row.voice_id, status, self.client.last_request_id)
        result.voice_id, result.voice_status, result.action = row.voice_id, status, "existing"
        result.prefix = row.prefix
        return result

    def _adopt(self, found: tuple[str, dict[str, Any]], sha: str, result: EnrollResult, action: Action) -> EnrollResult:
        voice_id, info = found
        status = str(info.get("status") or DEPLOYING)
        self.ledger.record_voice(sha, self.target_model, voice_id, status, self.client.last_request_id)
        row = self.ledger.get(sha, self.target_model)
        if row is not None:
            result.prefix = row.prefix
            result.request_ids = list(row.request_ids)
        result.voice_id, result.voice_status, result.action = voice_id, status, action
        log.info("reconciled %s: %s already exists (%s)", result.input, voice_id, status)
        return result

    def _await_outcome(self, sha: str, url: str, exc: ServiceError) -> tuple[str, dict[str, Any]] | None:
        """The voice an ambiguous create made, or None once it is known (or, for a create that got no
        answer, presumed after ``reconcile_timeout_s``) that it made none.

        A 5xx with a body is the service's final word on that request: one reconciliation. No answer
        (timeout, dropped connection, a gateway's 502/504) or a 2xx without a voice id means the
        service may still be creating it: wait ``reconcile_delay_s``, then poll the list with growing
        intervals until the voice appears or the bound passes; no new create happens before.
        """
        if _answered(exc):
            return self._reconcile(sha, url, self.prefix)
        return self._poll_for_voice(sha, url, self.prefix, self.reconcile_delay_s, self.reconcile_timeout_s)

    def _await_pending(self, row: LedgerRow) -> tuple[str, dict[str, Any]] | None:
        """The voice of a ``pending`` row (a create whose outcome no live process is waiting for: a crash,
        a run that gave up, an expired claim), polled for as for a fresh unanswered create: until it
        appears or ``reconcile_timeout_s`` has passed since that create could have been answered (the
        row is stamped before every create). A row older than that gets one look."""
        bound_s = self.client.timeout_s + self.reconcile_timeout_s + 1.0 - self.ledger.age_s(row)
        return self._poll_for_voice(row.audio_sha256, row.url, row.prefix, 0.0, max(bound_s, 0.0))

    def _poll_for_voice(
        self, sha: str, url: str | None, prefix: str, first_wait_s: float, bound_s: float
    ) -> tuple[str, dict[str, Any]] | None:
        """Look for this audio's voice after ``first_wait_s``, then at intervals growing by half from
        1 s up to 30 s, until it appears (returned) or ``bound_s`` has passed (None)."""
        deadline = self._clock() + bound_s
        wait = first_wait_s
        unrelated: set[str] = set()
        polls = 0
        while True:
            pause = min(wait, deadline - self._clock())
            if pause > 0:
                self._sleep(pause)
            polls += 1
            found = self._reconcile(sha, url, prefix, unrelated)
            if found is not None:
                return found
            if self._clock() >= deadline:
                if bound_s > 0:
                    log.warning("no voice from %s appeared in %d list polls over %.0f s; presuming none was made",
                                (url or "").split("?")[0], polls, bound_s)
                return None
            wait = min(max(wait * 1.5, RECONCILE_MIN_INTERVAL_S), RECONCILE_MAX_INTERVAL_S)

    def _reconcile(
        self, sha: str, url: str | None, prefix: str, unrelated: set[str] | None = None
    ) -> tuple[str, dict[str, Any]] | None:
        """Find a voice made from this audio that the ledger does not know: list_voice(prefix), then
        query_voice on each unknown voice of the target model for its ``resource_link``.
        ``unrelated`` collects the voices already queried and found to be of other audio."""
        known = self.ledger.known_voice_ids()
        skip = known | (unrelated if unrelated is not None else set())
        head = f"{self.target_model}-{prefix}-"
        candidates = [
            v for v in self.client.iter_voices(prefix)
            if str(v.get("voice_id", "")).startswith(head) and v.get("voice_id") not in skip
        ]
        candidates.sort(key=lambda v: str(v.get("gmt_create", "")), reverse=True)
        matches: list[tuple[str, dict[str, Any]]] = []
        for v in candidates:
            vid = str(v["voice_id"])
            try:
                info = self.client.query_voice(vid)
            except ServiceError as exc:
                if exc.code == "BadRequest.ResourceNotExist":
                    continue
                raise
            if same_audio(info.get("resource_link"), url, sha):
                matches.append((vid, info))
            elif unrelated is not None:
                unrelated.add(vid)
        if not matches:
            return None
        ok = [m for m in matches if m[1].get("status") == READY]
        if len(matches) > 1:
            log.warning("%d voices were made from the same audio: %s", len(matches), ", ".join(m[0] for m in matches))
        return (ok or matches)[0]

    def _check_quota(self) -> None:
        if self._remaining is None:
            count = self.client.count_voices()
            self._remaining = self.quota - count
        if self._remaining <= 0:
            raise ServiceError(
                "Throttling.AllocationQuota",
                f"the account already holds {self.quota - self._remaining} voices, the quota is {self.quota}; "
                "no voice was created",
                retryable=False,
            )

    def finish(self, result: EnrollResult) -> EnrollResult:
        """Wait until the voice is OK (or refused), and record its final status."""
        if result.status != "ok" or result.voice_id is None or result.voice_status == READY:
            return self._final(result)
        try:
            info = self.client.wait_until_ready(
                result.voice_id, timeout_s=self.ready_timeout_s, poll_interval_s=self.poll_interval_s
            )
        except ServiceError as exc:
            return result.fail(exc)
        status = str(info.get("status"))
        result.voice_status = status
        self.ledger.set_status(result.voice_id, status, self.client.last_request_id)
        return self._final(result)

    def _final(self, result: EnrollResult) -> EnrollResult:
        if result.status == "ok" and result.voice_status == REFUSED:
            result.fail(ServiceError(
                E.UNDEPLOYED, f"the service refused voice {result.voice_id} in review (UNDEPLOYED)",
                hint=E.HINTS[E.UNDEPLOYED] + f"; delete it first: `voiceprep voices delete {result.voice_id}`",
                retryable=False,
            ))
        return result


# --- building an Enroller from settings ------------------------------------------------------------


def default_ledger_path(settings: EnrollSettings, out_dir: str | Path | None) -> Path:
    """``enroll.ledger`` if set, else ``voiceprep-ledger.sqlite`` in ``out_dir`` (or the working folder)."""
    if settings.ledger:
        return Path(settings.ledger).expanduser()
    return Path(out_dir or ".") / LEDGER_NAME


def make_client(
    settings: EnrollSettings,
    service: ServiceSettings | None = None,
    *,
    transport: httpx.BaseTransport | None = None,
    shared: TokenStore | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> EnrollmentClient:
    """A client for the `enroll:` settings; ``DASHSCOPE_TIMEOUT`` / ``DASHSCOPE_MAX_RETRIES`` (read into
    ``service``) win over ``request_timeout_s`` / ``max_retries``, as the SDK's environment wins over its file.
    With ``shared`` (a ledger), its requests draw on the bucket that every process using it shares."""
    service = service or ServiceSettings.from_env()
    client = EnrollmentClient(
        service,
        transport=transport,
        timeout_s=service.timeout_s if service.timeout_s is not None else settings.request_timeout_s,
        max_retries=service.max_retries if service.max_retries is not None else settings.max_retries,
        rate_limit_per_s=settings.rate_limit_per_s,
        sleep=sleep,
        clock=clock,
    )
    if shared is not None:
        ws = f"/{service.workspace}" if service.workspace else ""
        client.limiter = SharedTokenBucket(shared, f"requests {urlsplit(service.base_url).netloc}{ws}",
                                           settings.rate_limit_per_s, fallback=client.limiter, sleep=sleep)
    return client


def make_enroller(
    settings: EnrollSettings,
    *,
    prefix: str | None = None,
    target_model: str | None = None,
    ledger: Ledger | str | Path | None = None,
    out_dir: str | Path | None = None,
    service: ServiceSettings | None = None,
    transport: httpx.BaseTransport | None = None,
    uploader: Uploader | None = None,
    wait: bool | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> Enroller:
    """An Enroller for the `enroll:` settings; arguments override them. Close with ``close_enroller``.
    ``wall_clock`` is the ledger's (leases and the shared rate limit), ``clock`` the client's and the
    enroller's own (intervals and deadlines)."""
    chosen_prefix = prefix or settings.prefix
    if not chosen_prefix:
        from pipeline.errors import ConfigError

        raise ConfigError("a voice prefix is needed: pass --prefix or set enroll.prefix (1-10 lowercase letters/digits)")
    check_prefix(chosen_prefix)
    model = check_target_model(target_model or settings.target_model)
    if not isinstance(ledger, Ledger):
        ledger = Ledger(Path(ledger) if ledger is not None else default_ledger_path(settings, out_dir),
                        clock=wall_clock)
    client = make_client(settings, service, transport=transport, shared=ledger, sleep=sleep, clock=clock)
    options: dict[str, Any] = {}
    if settings.language_hints:
        options["language_hints"] = list(settings.language_hints)
    return Enroller(
        client,
        uploader if uploader is not None else make_uploader(settings, client),
        ledger,
        target_model=model,
        prefix=chosen_prefix,
        wait=settings.wait if wait is None else wait,
        ready_timeout_s=settings.ready_timeout_s,
        poll_interval_s=settings.poll_interval_s,
        create_attempts=settings.create_attempts,
        reconcile_delay_s=settings.reconcile_delay_s,
        reconcile_timeout_s=settings.reconcile_timeout_s,
        quota=settings.quota,
        create_options=options,
        sleep=sleep,
        clock=clock,
    )


def close_enroller(enroller: Enroller) -> None:
    enroller.client.close()
    enroller.ledger.close()


def enroll_files(
    paths: Iterable[str | os.PathLike[str]],
    settings: EnrollSettings | None = None,
    **kwargs: Any,
) -> list[EnrollResult]:
    """Enroll already-clean audio files (e.g. the outputs of ``voiceprep run``); see ``make_enroller``."""
    enroller = make_enroller(settings or EnrollSettings(), **kwargs)
    try:
        return enroller.enroll_files(paths)
    finally:
        close_enroller(enroller)
