"""Claims on ledger rows and the shared rate limit, on fake clocks: processes sharing a ledger never
create the same voice twice and draw on one token bucket."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_dashscope import BASE, KEY, FakeService
from test_enroll import MODEL, FakeClock, _clip, enroller

from pipeline import registry
from pipeline.service import enroll as enroll_mod
from pipeline.service.claims import CLAIMED, Busy, Claimant
from pipeline.service.enroll import audio_sha256
from pipeline.service.errors import ServiceError
from pipeline.service.ledger import ClaimLost, Ledger
from pipeline.service.ratelimit import SharedTokenBucket, TokenBucket
from pipeline.service.settings import ApiKey, EnrollSettings, ServiceSettings

SHA = "ab" * 32
HANG_GUARD_S = 30.0  # only ever reached when something is broken


class HookClock(FakeClock):
    """A FakeClock that runs ``hook(n)`` after its n-th sleep (another process acting meanwhile)."""

    def __init__(self, hook: Callable[[int], object] | None = None) -> None:
        super().__init__()
        self.hook = hook

    def sleep(self, s: float) -> None:
        super().sleep(s)
        if self.hook is not None:
            self.hook(len(self.sleeps))


@pytest.fixture
def fake() -> FakeService:
    return FakeService()


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    p = tmp_path / "take.wav"
    p.write_bytes(b"RIFF" + bytes(range(64)) + b"WAVE")
    return p


# --- the ledger's claims ----------------------------------------------------------------------------


def test_a_claim_belongs_to_one_owner_until_released_or_expired(tmp_path: Path) -> None:
    clock = FakeClock()
    a, b = Ledger(tmp_path / "l.sqlite", clock=clock), Ledger(tmp_path / "l.sqlite", clock=clock)  # two processes
    try:
        assert a.claim(SHA, MODEL, "A", 30.0).state == "granted"
        held = b.claim(SHA, MODEL, "B", 30.0)
        assert (held.state, held.owner, held.expires_at) == ("held", "A", 30.0)
        clock.now = 20.0
        assert a.renew(SHA, MODEL, "A", 30.0) and b.claim_of(SHA, MODEL) == ("A", 50.0)
        clock.now = 49.0
        assert b.claim(SHA, MODEL, "B", 30.0).state == "held"
        clock.now = 50.0  # A stopped renewing: its lease is over
        taken = b.claim(SHA, MODEL, "B", 30.0)
        assert (taken.state, taken.took_over) == ("granted", "A")
        assert not a.renew(SHA, MODEL, "A", 30.0)
        with pytest.raises(ClaimLost):
            a.mark_pending(SHA, MODEL, "alice", "https://x/a.wav", "a.wav", owner="A")
        assert a.get(SHA, MODEL) is None  # nothing written by the owner that lost the row
        b.mark_pending(SHA, MODEL, "alice", "https://x/a.wav", "a.wav", owner="B")
        a.release(SHA, MODEL, "A")  # not A's any more: B keeps it
        assert a.claim(SHA, MODEL, "A", 30.0).state == "held"
        b.release(SHA, MODEL, "B")
        assert a.claim(SHA, MODEL, "A", 30.0).state == "granted"
    finally:
        a.close()
        b.close()


def test_a_row_that_names_a_voice_is_done_for_everyone_and_claims_nothing(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite", clock=FakeClock()) as ledger:
        ledger.claim(SHA, MODEL, "A", 30.0)
        ledger.mark_pending(SHA, MODEL, "alice", "https://x/a.wav", "a.wav", owner="A")
        assert ledger.claim(SHA, MODEL, "B", 30.0).state == "held"  # pending: A may be creating
        ledger.record_voice(SHA, MODEL, "v1", "DEPLOYING")
        done = ledger.claim(SHA, MODEL, "B", 30.0)
        assert done.state == "done" and done.row is not None and done.row.voice_id == "v1"
        assert ledger.claim_of(SHA, MODEL) == ("A", 30.0)
        ledger.set_status("v1", "deleted")  # deleted: the audio may be enrolled again, by one process
        assert ledger.claim(SHA, MODEL, "B", 30.0).state == "held"


# --- waiting for another process's claim ---------------------------------------------------------


def test_a_waiter_polls_with_growing_intervals_until_the_owner_records_the_voice(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", clock=FakeClock())
    ledger.claim(SHA, MODEL, "other", 30.0)

    def owner_finishes(n: int) -> None:
        if n == 6:
            ledger.mark_pending(SHA, MODEL, "alice", "https://x/a.wav", "a.wav", owner="other")
            ledger.record_voice(SHA, MODEL, "v1", "DEPLOYING")

    clock = HookClock(owner_finishes)
    claim, changed = Claimant(ledger, "me", 30.0, 600.0, clock.sleep, clock).take(SHA, MODEL, wait=True, source="a")
    assert claim.state == "done" and claim.row is not None and claim.row.voice_id == "v1" and changed
    assert clock.sleeps == pytest.approx([0.2, 0.3, 0.45, 0.675, 1.0125, 1.51875])
    assert ledger.claim_of(SHA, MODEL) == ("other", 30.0)  # the waiter took nothing
    ledger.close()


def test_a_waiter_takes_over_once_the_owners_lease_expires(tmp_path: Path) -> None:
    clock = FakeClock()
    ledger = Ledger(tmp_path / "l.sqlite", clock=clock)
    ledger.claim(SHA, MODEL, "dead", 30.0)
    claim, _ = Claimant(ledger, "me", 30.0, 600.0, clock.sleep, clock).take(SHA, MODEL, wait=True, source="a")
    assert (claim.state, claim.took_over) == ("granted", "dead")
    assert clock.now >= 30.0 and max(clock.sleeps) == 5.0  # the interval stops growing at 5 s
    assert ledger.claim_of(SHA, MODEL) == ("me", clock.now + 30.0)
    ledger.close()


def test_not_waiting_is_busy_at_once_and_waiting_is_bounded(tmp_path: Path) -> None:
    clock = HookClock(lambda n: ledger.renew(SHA, MODEL, "other", 30.0))  # a live owner that never finishes
    ledger = Ledger(tmp_path / "l.sqlite", clock=clock)
    ledger.claim(SHA, MODEL, "other", 30.0)
    claimant = Claimant(ledger, "me", 30.0, 100.0, clock.sleep, clock)
    with pytest.raises(Busy):
        claimant.take(SHA, MODEL, wait=False, source="a")
    assert clock.sleeps == []
    with pytest.raises(ServiceError) as info:
        claimant.take(SHA, MODEL, wait=True, source="a")
    assert info.value.code == CLAIMED and "no voice was created" in info.value.message and info.value.hint
    assert sum(clock.sleeps) == pytest.approx(100.0)
    assert (ledger.claim_of(SHA, MODEL) or ("",))[0] == "other"
    ledger.close()


# --- the enroller with another process on the same ledger -------------------------------------------


def _other(tmp_path: Path, clock: FakeClock) -> Ledger:
    """Another process's connection to the test's ledger."""
    return Ledger(tmp_path / "ledger.sqlite", clock=clock)


def _kw(fake: FakeService, tmp_path: Path, clock: FakeClock, **enroll: Any) -> dict[str, Any]:
    """``enroll_files`` arguments: the fake service, the test's ledger, everything on ``clock``."""
    return {"settings": EnrollSettings.from_mapping({"target_model": MODEL, "poll_interval_s": 1.0, **enroll}),
            "prefix": "alice", "ledger": tmp_path / "ledger.sqlite", "service": ServiceSettings(ApiKey(KEY), BASE),
            "transport": fake.transport(), "sleep": clock.sleep, "clock": clock, "wall_clock": clock}


def test_an_audio_another_process_is_creating_is_waited_for_and_its_voice_reused(
    fake: FakeService, tmp_path: Path, clip: Path
) -> None:
    sha = audio_sha256(clip.read_bytes())
    made: list[str] = []

    def other_records(n: int) -> None:
        if n == 3:
            made.append(fake.add_voice("alice", f"https://x/{sha}.wav", MODEL))
            other.record_voice(sha, MODEL, made[0], "DEPLOYING", "rid-other")
            other.release(sha, MODEL, "other")

    clock = HookClock(other_records)
    other = _other(tmp_path, clock)
    other.claim(sha, MODEL, "other", 30.0)
    other.mark_pending(sha, MODEL, "alice", f"https://x/{sha}.wav", str(clip), owner="other")
    (r,) = enroll_mod.enroll_files([clip], **_kw(fake, tmp_path, clock))
    assert (r.status, r.action, r.voice_id, r.voice_status) == ("ok", "existing", made[0], "OK")
    assert fake.calls("create_voice") == [] and "rid-other" in r.request_ids
    assert clock.sleeps[:3] == pytest.approx([0.2, 0.3, 0.45])
    other.close()


def test_a_dead_owners_create_is_reconciled_after_its_lease_not_made_again(
    fake: FakeService, tmp_path: Path, clip: Path
) -> None:
    sha = audio_sha256(clip.read_bytes())
    clock = FakeClock()
    other = _other(tmp_path, clock)
    other.claim(sha, MODEL, "dead", 30.0)
    url = f"https://x/{sha}.wav"
    other.mark_pending(sha, MODEL, "alice", url, str(clip), owner="dead")
    fake.add_voice("bob", "https://x/unrelated.wav", MODEL)
    made = fake.add_voice("alice", url, MODEL)  # the service carried the dead owner's create out
    (r,) = enroll_mod.enroll_files([clip], **_kw(fake, tmp_path, clock))
    assert (r.status, r.action, r.voice_id) == ("ok", "reconciled", made)
    assert fake.calls("create_voice") == [] and clock.now >= 30.0
    row = other.get(sha, MODEL)
    assert row is not None and row.voice_id == made and other.claim_of(sha, MODEL) is None
    other.close()


def test_a_pending_row_is_polled_for_until_a_create_still_running_shows_its_voice(
    fake: FakeService, tmp_path: Path, clip: Path
) -> None:
    # a crash right after sending a create that the service is still carrying out: the voice shows up
    # in the list only at the third look; one look (as before) would have made a second voice
    sha = audio_sha256(clip.read_bytes())
    clock = FakeClock()
    url = f"https://x/{sha}.wav"
    with _other(tmp_path, clock) as crashed:
        crashed.mark_pending(sha, MODEL, "alice", url, str(clip))
    real_list = fake._list_voice
    made: list[str] = []

    def slow_service(request: httpx.Request) -> httpx.Response:
        if len(fake.calls("list_voice")) == 3 and not made:
            made.append(fake.add_voice("alice", url, MODEL))
        return real_list(request)

    fake._list_voice = slow_service  # type: ignore[method-assign]
    (r,) = enroll_mod.enroll_files([clip], **_kw(fake, tmp_path, clock))
    assert (r.status, r.action, r.voice_id) == ("ok", "reconciled", made[0])
    assert fake.calls("create_voice") == [] and len(fake.voices) == 1
    assert clock.sleeps[:2] == [1.0, 1.5]  # the first look at once, then as for an unanswered create


def test_a_pending_row_older_than_the_bound_gets_one_look_then_a_create(
    fake: FakeService, tmp_path: Path, clip: Path
) -> None:
    sha = audio_sha256(clip.read_bytes())
    clock = FakeClock()
    with _other(tmp_path, clock) as crashed:
        crashed.mark_pending(sha, MODEL, "alice", f"https://x/{sha}.wav", str(clip))
    clock.now = 60 + 120 + 2.0  # request_timeout_s + reconcile_timeout_s (+ the stamp's second) later
    (r,) = enroll_mod.enroll_files([clip], **_kw(fake, tmp_path, clock))
    assert (r.status, r.action) == ("ok", "created")
    assert len(fake.calls("list_voice")) == 2  # one look for the pending row, one to count the quota
    assert len(fake.calls("create_voice")) == 1


def test_the_lease_is_renewed_while_a_create_outlasts_it(fake: FakeService, tmp_path: Path, clip: Path) -> None:
    sha = audio_sha256(clip.read_bytes())
    clock = FakeClock()
    e = enroller(fake, tmp_path, clock=clock)
    e.renew_every_s = 0.001
    renewed = threading.Condition()
    count = [0]
    real_renew = e.ledger.renew

    def counting(*args: Any, **kw: Any) -> bool:
        ok = real_renew(*args, **kw)
        with renewed:
            count[0] += 1
            renewed.notify_all()
        return ok

    e.ledger.renew = counting  # type: ignore[method-assign]
    other = _other(tmp_path, clock)
    seen: list[str] = []

    def slow_create(request: httpx.Request) -> httpx.Response:
        for _ in range(3):  # 60 s on the wall clock: twice the lease
            clock.now += 20.0
            with renewed:
                target = count[0] + 1
                assert renewed.wait_for(lambda: count[0] >= target, timeout=HANG_GUARD_S)
            seen.append(other.claim(sha, MODEL, "other", 30.0).state)
        return fake._create_voice(request)

    fake.script["create_voice"] = [slow_create]
    try:
        (r,) = e.enroll_files([clip])
    finally:
        enroll_mod.close_enroller(e)
    assert seen == ["held"] * 3 and (r.status, r.action) == ("ok", "created")
    assert other.claim_of(sha, MODEL) is None  # released once the voice was recorded
    other.close()


def test_a_process_that_lost_its_claim_never_creates(fake: FakeService, tmp_path: Path, clip: Path) -> None:
    # stalled past its lease during the upload: another process took the audio over and made its voice
    sha = audio_sha256(clip.read_bytes())
    made: list[str] = []

    def other_finishes(n: int) -> None:
        if n == 1:
            made.append(fake.add_voice("alice", f"https://x/{sha}.wav", MODEL))
            other.record_voice(sha, MODEL, made[0], "DEPLOYING")
            other.release(sha, MODEL, "other")

    clock = HookClock(other_finishes)
    other = _other(tmp_path, clock)

    def stalled_upload(request: httpx.Request) -> httpx.Response:
        clock.now += 31.0
        assert other.claim(sha, MODEL, "other", 30.0).took_over
        other.mark_pending(sha, MODEL, "alice", f"https://x/{sha}.wav", "elsewhere.wav", owner="other")
        return fake._upload(request)

    fake.script["upload"] = [stalled_upload]
    (r,) = enroll_mod.enroll_files([clip], **_kw(fake, tmp_path, clock))
    assert (r.status, r.action, r.voice_id) == ("ok", "existing", made[0])
    assert fake.calls("create_voice") == []
    row = other.get(sha, MODEL)
    assert row is not None and (row.voice_id, row.source) == (made[0], "elsewhere.wav")
    other.close()


def test_an_audio_refused_while_waiting_is_not_sent_again(fake: FakeService, tmp_path: Path, clip: Path) -> None:
    sha = audio_sha256(clip.read_bytes())

    def other_refused(n: int) -> None:
        if n == 2:
            other.mark_pending(sha, MODEL, "alice", f"https://x/{sha}.wav", str(clip), owner="other")
            other.mark_failed(sha, MODEL, "Audio.AudioShortError", "audio too short", "rid-short")
            other.release(sha, MODEL, "other")

    clock = HookClock(other_refused)
    other = _other(tmp_path, clock)
    other.claim(sha, MODEL, "other", 30.0)
    (r,) = enroll_mod.enroll_files([clip], **_kw(fake, tmp_path, clock))
    assert (r.status, r.code) == ("rejected", "Audio.AudioShortError") and "rid-short" in r.request_ids
    assert fake.requests == []
    other.close()


def test_a_clip_another_enroller_holds_is_put_off_until_the_rest_are_submitted(
    fake: FakeService, tmp_path: Path
) -> None:
    clips = []
    for i in range(2):
        p = tmp_path / f"c{i}.wav"
        p.write_bytes(b"RIFF" + bytes([i + 1]) * 64 + b"WAVE")
        clips.append(p)
    in_create, go_on = threading.Event(), threading.Event()

    def held_create(request: httpx.Request) -> httpx.Response:
        in_create.set()
        go_on.wait(HANG_GUARD_S)
        return fake._create_voice(request)

    fake.script["create_voice"] = [held_create]
    a = enroller(fake, tmp_path, enroll={"wait": False})
    first: list[Any] = []
    worker = threading.Thread(target=lambda: first.extend(a.enroll_files(clips[:1])))
    worker.start()
    assert in_create.wait(HANG_GUARD_S)

    def let_a_finish(n: int) -> None:
        if n == 1:
            go_on.set()
            worker.join(HANG_GUARD_S)

    b = enroller(fake, tmp_path, clock=HookClock(let_a_finish), enroll={"wait": False})
    try:
        second = b.enroll_files(clips)
    finally:
        enroll_mod.close_enroller(a)
        enroll_mod.close_enroller(b)
    creates = [c["url"] for c in fake.calls("create_voice")]
    shas = [audio_sha256(c.read_bytes()) for c in clips]
    assert [shas[0] in creates[0], shas[1] in creates[1], len(creates)] == [True, True, 2]
    assert [(r.action, r.voice_id) for r in second] == [("existing", first[0].voice_id), ("created", second[1].voice_id)]
    assert len(fake.voices) == 2


def test_the_enroll_stage_of_another_batch_waits_and_reuses_the_voice(fake: FakeService, tmp_path: Path) -> None:
    clip = registry.build("encode")(_clip("/in/take.wav"))
    assert clip.encoded is not None
    sha = audio_sha256(clip.encoded)
    made: list[str] = []

    def other_batch_records(n: int) -> None:
        if n == 2:
            made.append(fake.add_voice("alice", f"https://x/{sha}.wav", MODEL))
            other.mark_pending(sha, MODEL, "alice", f"https://x/{sha}.wav", "/in/take.wav", owner="batch1")
            other.record_voice(sha, MODEL, made[0], "DEPLOYING")
            other.release(sha, MODEL, "batch1")

    clock = HookClock(other_batch_records)
    other = _other(tmp_path, clock)
    other.claim(sha, MODEL, "batch1", 30.0)
    stage = registry.build("enroll", {"prefix": "alice", "target_model": MODEL})
    with stage.open(enroller(fake, tmp_path, clock=clock)) as enroll:
        info = enroll(clip).metrics["enrollment"]
    assert (info["action"], info["voice_id"]) == ("existing", made[0]) and fake.calls("create_voice") == []
    other.close()


# --- the shared token bucket --------------------------------------------------------------------------


def test_processes_sharing_a_ledger_share_one_token_bucket(tmp_path: Path) -> None:
    clock = FakeClock()
    ledgers = [Ledger(tmp_path / "l.sqlite", clock=clock) for _ in range(2)]  # two processes
    waits: list[float] = []
    buckets = [SharedTokenBucket(lg, "requests", 10.0, fallback=TokenBucket(10.0, clock=clock, sleep=clock.sleep),
                                 sleep=waits.append) for lg in ledgers]
    # 30 requests asked for at the same instant, alternately by the two processes: each one is due
    # when the one bucket has a token for it
    due = [clock.now + buckets[k % 2].acquire() for k in range(30)]
    assert due == pytest.approx([0.0] * 10 + [k / 10 for k in range(1, 21)])
    # the same with a bucket each lets 20 through at once: twice the rate the account allows
    own = [TokenBucket(10.0, clock=clock, sleep=waits.append) for _ in range(2)]
    assert sum(own[k % 2].acquire() == 0.0 for k in range(30)) == 20
    for lg in ledgers:
        lg.close()


def test_the_shared_bucket_refills_on_the_ledgers_clock_and_survives_a_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    with Ledger(tmp_path / "l.sqlite", clock=clock) as lg:
        for _ in range(12):
            lg.take_token("requests", 4.0, 4.0)  # 4 tokens, then 8 in debt
    clock.now = 1.0  # a process started a second later still owes 4 tokens' worth
    with Ledger(tmp_path / "l.sqlite", clock=clock) as lg:
        assert lg.take_token("requests", 4.0, 4.0) == pytest.approx(1.25)
        clock.now = 0.5  # a clock that steps back refills nothing, and does not stall the bucket
        assert lg.take_token("requests", 4.0, 4.0) == pytest.approx(1.5)
        clock.now = 100.0
        assert lg.take_token("requests", 4.0, 4.0) == 0.0
        assert lg.take_token("other host", 4.0, 4.0) == 0.0  # one bucket per service


def test_a_ledger_out_of_reach_falls_back_to_the_clients_own_bucket(tmp_path: Path) -> None:
    clock = FakeClock()
    lg = Ledger(tmp_path / "l.sqlite", clock=clock)
    lg.close()
    own = TokenBucket(1.0, clock=clock, sleep=clock.sleep)
    bucket = SharedTokenBucket(lg, "requests", 1.0, fallback=own, sleep=clock.sleep)
    assert bucket.acquire() == 0.0 and bucket.acquire() == 1.0  # paced by the fallback alone
    assert clock.sleeps == [1.0]


def test_the_enroller_paces_its_requests_with_the_ledgers_bucket(fake: FakeService, tmp_path: Path, clip: Path) -> None:
    clock = FakeClock()
    e = enroller(fake, tmp_path, clock=clock, enroll={"rate_limit_per_s": 2.0, "wait": False})
    try:
        assert isinstance(e.client.limiter, SharedTokenBucket) and e.client.limiter.rate_per_s == 2.0
        (r,) = e.enroll_files([clip])
    finally:
        enroll_mod.close_enroller(e)
    assert r.status == "ok"
    n = len(fake.requests)  # list (the quota), getPolicy, upload, create: more than the burst of 2
    assert n == 4 and sum(clock.sleeps) == pytest.approx((n - 2) / 2.0)
    with Ledger(tmp_path / "ledger.sqlite") as lg, lg._lock:
        rows = lg._db.execute("SELECT name FROM rate_buckets").fetchall()
    assert [r[0] for r in rows] == ["requests dashscope.test"]
