"""Two `voiceprep enroll` processes (real subprocesses) over the same 20 clips and one ledger, against the
emulator: one voice per clip, every id in the ledger, and their requests together within the one rate
limit they share through the ledger."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
import yaml
from conftest import FIXTURES
from test_enroll_e2e import MODEL, SPEECH, client_for, config_with

from pipeline.emulator.judge import Judgement, ProjectJudge
from pipeline.service.ledger import Ledger

CLIPS = 20
CLIENT_RPS = 4.0  # enroll.rate_limit_per_s: what the two processes send together
CLIENT_BURST = 4.0  # the shared bucket's burst: one second's worth (SharedTokenBucket's default)
HANG_GUARD_S = 300.0  # only reached when something is broken


def make_clips(folder: Path) -> list[Path]:
    """The reader's first 12 s at 20 gains: 20 distinct audios, each a voice of its own."""
    x, sr = sf.read(FIXTURES / SPEECH, dtype="float32")
    folder.mkdir()
    out = []
    for i in range(CLIPS):
        p = folder / f"take{i:02d}.wav"
        sf.write(p, x[: 12 * sr] * (0.5 + 0.025 * i), sr, subtype="PCM_16")
        out.append(p)
    return out


class OverlapJudge:
    """The project's judge, except that the first clip is judged only once two processes hold claims in
    the ledger at the same time: whatever the scheduling, the test then runs them side by side, the
    first holding its clip while the second passes it by."""

    def __init__(self, ledger: Path) -> None:
        self.ledger = ledger
        self.inner = ProjectJudge()
        self.overlapped = threading.Event()
        self.first = True

    def __call__(self, path: Path) -> Judgement:
        if self.first:
            self.first = False
            deadline = time.monotonic() + HANG_GUARD_S
            while not self.two_owners() and time.monotonic() < deadline:
                time.sleep(0.02)
            if self.two_owners():
                self.overlapped.set()
        return self.inner(path)

    def two_owners(self) -> bool:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{self.ledger}?mode=ro", uri=True)) as db:
                return int(db.execute("SELECT COUNT(DISTINCT owner) FROM claims").fetchone()[0]) >= 2
        except sqlite3.Error:  # not created yet
            return False


@pytest.fixture
def arrivals(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The wall-clock time each enrollment request reached the emulator (which limits no rate here)."""
    emu = emulator.emulator
    real = emu.throttle
    seen: list[float] = []

    def stamping(account: str, scope: str, rate_per_s: float | None, burst: float) -> None:
        if scope == "customization":
            seen.append(time.time())
        real(account, scope, rate_per_s, burst)

    monkeypatch.setattr(emu, "throttle", stamping)
    return seen


def test_two_enroll_processes_on_one_ledger_make_one_voice_per_clip_within_the_rate(
    emulator: Any, file_server: Any, arrivals: list[float], tmp_path: Path
) -> None:
    emulator.configure(deploy_delay_s=0.0)  # the processes sleep for real: voices are ready at their first query
    served = file_server.dir / f"concurrent-{tmp_path.name}"
    make_clips(served)
    ledger = tmp_path / "shared-ledger.sqlite"
    judge = OverlapJudge(ledger)
    emulator.emulator.judge = judge
    cfg = config_with(tmp_path, upload="public", public_base_url=f"{file_server.origin}/{served.name}/",
                      rate_limit_per_s=CLIENT_RPS, poll_interval_s=0.05, request_timeout_s=HANG_GUARD_S)
    data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    data["check"] = ["validate"]  # --as-is judges each clip first: the format and speech rules are enough here
    cfg.write_text(yaml.safe_dump(data), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")}
    env.update(emulator.env())
    started = time.time()  # no token of the shared bucket is taken before this
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pipeline", "enroll", str(served), "--as-is", "--prefix", "twice",
             "--target-model", MODEL, "--ledger", str(ledger), "--out", str(tmp_path / f"out{k}"),
             "--config", str(cfg), "-q"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for k in range(2)
    ]
    try:
        outs = [p.communicate(timeout=HANG_GUARD_S) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], outs
    assert judge.overlapped.is_set()  # both held claims at once: they really ran side by side

    reports = [[json.loads(x) for x in (tmp_path / f"out{k}" / "enroll-report.jsonl").read_text().splitlines()]
               for k in range(2)]
    by_clip: dict[str, list[dict[str, Any]]] = {}
    for lines in reports:
        assert len(lines) == CLIPS and all(line["status"] == "ok" for line in lines)
        for line in lines:
            by_clip.setdefault(line["input"], []).append(line)
    assert len(by_clip) == CLIPS
    for lines in by_clip.values():  # made by one process, reused by the other
        assert sorted(line["enrollment"]["action"] for line in lines) == ["created", "existing"]
        assert lines[0]["voice_id"] == lines[1]["voice_id"]
    ids = {lines[0]["voice_id"] for lines in by_clip.values()}

    with client_for(emulator) as c:
        on_service = [v["voice_id"] for v in c.iter_voices("twice")]
    assert len(on_service) == CLIPS and set(on_service) == ids  # no duplicate, none lost
    with Ledger(ledger) as lg:
        rows = lg.rows()
        assert {r.voice_id for r in rows} == ids and {r.status for r in rows} == {"OK"}
        assert all(lg.claim_of(r.audio_sha256, MODEL) is None for r in rows)  # every claim released

    # The shared bucket lets at most CLIENT_BURST + CLIENT_RPS * t requests be sent in the first t seconds
    # after `started`, and a request reaches the emulator only after it was let go: however the machine
    # schedules the processes, the k-th arrival comes no earlier than that allows. Two processes that
    # each kept their own bucket would send twice as fast.
    assert len(arrivals) >= 2 * CLIPS  # a create and a status query per clip, at least
    over = [(k, round(t - started, 3)) for k, t in enumerate(sorted(arrivals), start=1)
            if k > CLIENT_BURST + CLIENT_RPS * (t - started) + 1e-6]
    assert not over, f"requests (count, seconds) sent faster than {CLIENT_RPS:g}/s together: {over[:5]}"
