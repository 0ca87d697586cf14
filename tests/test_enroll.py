"""The enroll flow over httpx.MockTransport: ledger, reconciliation, no duplicate voice, quota, stage."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fake_dashscope import BASE, KEY, FakeService, error

from pipeline import registry
from pipeline.clip import Clip, SourceInfo
from pipeline.config import parse
from pipeline.errors import ConfigError, PipelineError
from pipeline.service import enroll as enroll_mod
from pipeline.service.enroll import Enroller, audio_sha256, make_enroller, same_audio
from pipeline.service.ledger import Ledger
from pipeline.service.settings import ApiKey, EnrollSettings, ServiceSettings
from pipeline.service.upload import PublicUploader

MODEL = "cosyvoice-v2"


@pytest.fixture
def fake() -> FakeService:
    return FakeService()


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    out = []
    for i in range(3):
        p = tmp_path / f"take{i}.wav"
        p.write_bytes(b"RIFF" + bytes([i]) * 64 + b"WAVE")
        out.append(p)
    return out


class FakeClock:
    """Time that passes only when slept through."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def enroller(fake: FakeService, tmp_path: Path, **kw: Any) -> Enroller:
    settings = EnrollSettings.from_mapping({"target_model": MODEL, "poll_interval_s": 1.0, **kw.pop("enroll", {})})
    clock = kw.pop("clock", None) or FakeClock()
    return make_enroller(
        settings,
        prefix=kw.pop("prefix", "alice"),
        ledger=tmp_path / "ledger.sqlite",
        service=ServiceSettings(ApiKey(KEY), BASE),
        transport=fake.transport(),
        sleep=clock.sleep,
        clock=clock,
        wall_clock=clock,
        **kw,
    )


def run(fake: FakeService, tmp_path: Path, paths: list[Path], **kw: Any) -> list[Any]:
    e = enroller(fake, tmp_path, **kw)
    try:
        return e.enroll_files(paths)
    finally:
        enroll_mod.close_enroller(e)


def test_enroll_uploads_creates_waits_and_records(fake: FakeService, tmp_path: Path, files: list[Path]) -> None:
    results = run(fake, tmp_path, files)
    assert [r.status for r in results] == ["ok"] * 3
    assert [r.action for r in results] == ["created"] * 3
    assert [r.voice_status for r in results] == ["OK"] * 3
    assert len(fake.calls("create_voice")) == 3 and len(fake.voices) == 3
    for r, f in zip(results, files):
        assert r.voice_id in fake.voices and r.audio_sha256 == audio_sha256(f.read_bytes())
        assert fake.voices[r.voice_id]["url"].startswith("oss://") and r.audio_sha256 in fake.voices[r.voice_id]["url"]
        assert r.request_ids
    creates = [r for r in fake.requests if r.url.path.endswith("/customization") and b"create_voice" in r.content]
    assert all(r.headers["x-dashscope-ossresourceresolve"] == "enable" for r in creates)
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        rows = ledger.rows()
    assert {(r.voice_id, r.status, r.prefix, r.target_model) for r in rows} == {
        (r.voice_id, "OK", "alice", MODEL) for r in results}
    assert all(row.request_ids for row in rows)


def test_rerun_never_enrolls_the_same_audio_twice(fake: FakeService, tmp_path: Path, files: list[Path]) -> None:
    first = run(fake, tmp_path, files)
    again = run(fake, tmp_path, [*files, files[0]])
    assert len(fake.calls("create_voice")) == 3 and len(fake.voices) == 3
    assert [r.action for r in again] == ["existing"] * 4
    assert [r.voice_id for r in again] == [r.voice_id for r in first] + [first[0].voice_id]


def test_same_audio_twice_in_one_batch_is_one_voice(fake: FakeService, tmp_path: Path, files: list[Path]) -> None:
    copy = tmp_path / "copy.wav"
    copy.write_bytes(files[0].read_bytes())
    results = run(fake, tmp_path, [files[0], copy])
    assert results[0].voice_id == results[1].voice_id and len(fake.voices) == 1


def test_timeout_on_create_after_the_service_created_it_is_reconciled(
    fake: FakeService, tmp_path: Path, files: list[Path]
) -> None:
    fake.after_create.append(httpx.ReadTimeout("the answer was lost"))
    fake.add_voice("alice", "https://elsewhere/other.wav", MODEL)  # an unrelated voice with the prefix
    (r,) = run(fake, tmp_path, files[:1])
    assert r.status == "ok" and r.action == "reconciled" and r.voice_status == "OK"
    assert len(fake.calls("create_voice")) == 1 and len(fake.voices) == 2
    assert fake.calls("list_voice") and fake.calls("query_voice")


def test_timeout_on_create_before_the_service_acted_creates_once(
    fake: FakeService, tmp_path: Path, files: list[Path]
) -> None:
    fake.script["create_voice"] = [httpx.ReadTimeout("never arrived")]
    (r,) = run(fake, tmp_path, files[:1])
    assert r.status == "ok" and r.action == "created"
    assert len(fake.calls("create_voice")) == 2 and len(fake.voices) == 1
    # reconciliation ran between the two attempts
    actions = [r.content for r in fake.requests if r.url.path.endswith("/customization")]
    first_create = next(i for i, c in enumerate(actions) if b"create_voice" in c)
    assert b"list_voice" in actions[first_create + 1]


class SlowCreates:
    """A service that takes ``create_s`` (on the fake clock) to carry out a create_voice, behind a client
    whose request times out after ``timeout_s``: the client sees a ReadTimeout, and the voice appears in
    the service's answers only once the clock has passed the create's end."""

    def __init__(self, fake: FakeService, clock: FakeClock, create_s: float, timeout_s: float) -> None:
        self.fake, self.clock, self.create_s, self.timeout_s = fake, clock, create_s, timeout_s
        self.running: list[tuple[float, httpx.Request]] = []
        fake.script["create_voice"] = [self.create] * 100
        for action in ("list_voice", "query_voice"):
            real = getattr(fake, f"_{action}")
            setattr(fake, f"_{action}", self.after_due(real))

    def create(self, request: httpx.Request) -> httpx.Response:
        self.running.append((self.clock() + self.create_s, request))
        self.clock.now += self.timeout_s
        raise httpx.ReadTimeout("timed out", request=request)

    def finish_due(self, until: float) -> None:
        for item in [r for r in self.running if r[0] <= until]:
            self.running.remove(item)
            self.fake._create_voice(item[1])

    def after_due(self, real: Any) -> Any:
        def serve(request: httpx.Request) -> httpx.Response:
            self.finish_due(self.clock())
            return real(request)
        return serve


def test_a_create_slower_than_the_request_timeout_makes_one_voice_per_clip(
    fake: FakeService, tmp_path: Path
) -> None:
    # issue 16: request_timeout_s 3, reconcile_delay_s 1, a service that takes 5 s per create; 5 clips
    clips = []
    for i in range(5):
        p = tmp_path / f"clip{i}.wav"
        p.write_bytes(b"RIFF" + bytes([i + 10]) * 64 + b"WAVE")
        clips.append(p)
    clock = FakeClock()
    slow = SlowCreates(fake, clock, create_s=5.0, timeout_s=3.0)
    results = run(fake, tmp_path, clips, clock=clock, enroll={"request_timeout_s": 3, "reconcile_delay_s": 1})
    slow.finish_due(float("inf"))  # whatever the service was still doing when the run ended
    assert [(r.status, r.action) for r in results] == [("ok", "reconciled")] * 5, [r.line() for r in results]
    assert len(fake.calls("create_voice")) == 5 and len(fake.voices) == 5
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        assert {r.voice_id for r in ledger.rows()} == set(fake.voices)
    assert len({r.voice_id for r in results}) == 5


def test_an_unanswered_create_is_polled_for_until_the_bound_then_created_again(
    fake: FakeService, tmp_path: Path, files: list[Path]
) -> None:
    fake.script["create_voice"] = [httpx.ReadTimeout("never reached the service")]
    clock = FakeClock()
    (r,) = run(fake, tmp_path, files[:1], clock=clock,
               enroll={"reconcile_delay_s": 2, "reconcile_timeout_s": 30, "poll_interval_s": 1})
    assert (r.status, r.action) == ("ok", "created") and len(fake.voices) == 1
    assert len(fake.calls("create_voice")) == 2
    polls = len(fake.calls("list_voice")) - 1  # the first one counted the quota
    # reconcile_delay_s first, then intervals growing by half, the last one cut at the bound
    assert clock.sleeps[:polls] == [2.0, 3.0, 4.5, 6.75, 10.125, 3.625]


def test_transient_500_request_asr_failed_then_success(fake: FakeService, tmp_path: Path, files: list[Path]) -> None:
    fake.script["create_voice"] = [error(500, "InternalError", "request asr failed")] * 2
    (r,) = run(fake, tmp_path, files[:1])
    assert r.status == "ok" and len(fake.calls("create_voice")) == 3 and len(fake.voices) == 1


def test_answered_5xx_exhausted_is_a_failed_row_and_the_next_run_creates_once(
    fake: FakeService, tmp_path: Path, files: list[Path]
) -> None:
    # each 500 was the service's answer, reconciled before the next attempt: the outcome is known
    fake.script["create_voice"] = [error(500, "InternalError", "Internal server error!")] * 3
    (r,) = run(fake, tmp_path, files[:1])
    assert r.status == "rejected" and r.code == "InternalError" and r.hint
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        assert (ledger.rows()[0].status, ledger.rows()[0].error_code) == ("failed", "InternalError")
    (r,) = run(fake, tmp_path, files[:1])
    assert r.status == "ok" and len(fake.voices) == 1 and len(fake.calls("create_voice")) == 4


def test_unanswered_creates_exhausted_leave_a_pending_row_reconciled_next_run(
    fake: FakeService, tmp_path: Path, files: list[Path]
) -> None:
    fake.script["create_voice"] = [httpx.ReadTimeout("no answer")] * 3
    (r,) = run(fake, tmp_path, files[:1])
    assert r.status == "rejected" and r.code == "RequestTimeout"
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        assert ledger.rows()[0].status == "pending"
    (r,) = run(fake, tmp_path, files[:1])
    assert r.status == "ok" and len(fake.voices) == 1


def test_crash_between_answer_and_ledger_write_is_recovered(
    fake: FakeService, tmp_path: Path, files: list[Path]
) -> None:
    # A run that crashed: the pending row was committed, the service made the voice, the answer was lost.
    e = enroller(fake, tmp_path)
    data = files[0].read_bytes()
    sha = audio_sha256(data)
    up = e.uploader.upload(data, object_name=f"{sha}.wav", filename=files[0].name)
    e.ledger.mark_pending(sha, MODEL, "alice", up.url, str(files[0]))
    made = e.client.create_voice(MODEL, "alice", up.url)
    enroll_mod.close_enroller(e)
    creates = len(fake.calls("create_voice"))
    (r,) = run(fake, tmp_path, files[:1])
    assert (r.status, r.action, r.voice_id) == ("ok", "reconciled", made)
    assert len(fake.calls("create_voice")) == creates and len(fake.voices) == 1


def test_crash_before_the_service_acted_creates_on_the_next_run(
    fake: FakeService, tmp_path: Path, files: list[Path]
) -> None:
    e = enroller(fake, tmp_path)
    sha = audio_sha256(files[0].read_bytes())
    e.ledger.mark_pending(sha, MODEL, "alice", "oss://dashscope-instant/lost/x.wav", str(files[0]))
    enroll_mod.close_enroller(e)
    (r,) = run(fake, tmp_path, files[:1])
    assert (r.status, r.action) == ("ok", "created") and len(fake.voices) == 1


def test_refusal_is_recorded_and_reported(fake: FakeService, tmp_path: Path, files: list[Path]) -> None:
    fake.script["create_voice"] = [error(400, "Audio.AudioSilentError", "silent audio error!", rid="rid-s")]
    results = run(fake, tmp_path, files[:2])
    assert results[0].status == "rejected" and results[0].code == "Audio.AudioSilentError"
    assert "rid-s" in results[0].request_ids and "speech" in results[0].hint
    assert results[1].status == "ok"
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        row = ledger.get(results[0].audio_sha256, MODEL)
    assert row is not None and (row.status, row.error_code, row.request_ids) == ("failed", "Audio.AudioSilentError", ("rid-s",))


def test_undeployed_voice_is_a_failure_with_a_hint(fake: FakeService, tmp_path: Path, files: list[Path]) -> None:
    fake.final_status = "UNDEPLOYED"
    (r,) = run(fake, tmp_path, files[:1])
    assert r.status == "rejected" and r.code == "VoiceUndeployed" and r.voice_id in r.hint
    (again,) = run(fake, tmp_path, files[:1])
    assert again.code == "VoiceUndeployed" and len(fake.calls("create_voice")) == 1


def test_a_voice_deleted_on_the_service_is_enrolled_again(fake: FakeService, tmp_path: Path, files: list[Path]) -> None:
    (first,) = run(fake, tmp_path, files[:1])
    del fake.voices[first.voice_id]
    (second,) = run(fake, tmp_path, files[:1])
    assert second.action == "created" and second.voice_id != first.voice_id


def test_quota_is_counted_before_creating(fake: FakeService, tmp_path: Path, files: list[Path]) -> None:
    for i in range(998):
        fake.add_voice("bob", f"https://e/{i}.wav")
    results = run(fake, tmp_path, files)
    assert [r.status for r in results] == ["ok", "ok", "rejected"]
    assert results[2].code == "Throttling.AllocationQuota" and "voices delete" in results[2].hint
    assert "1000" in results[2].message
    assert len(fake.calls("create_voice")) == 2
    uploads = [r for r in fake.requests if r.url.path.endswith("/uploads")]
    assert len(uploads) == 2  # nothing uploaded for the refused one


def test_quota_answer_from_the_service_stops_the_batch(fake: FakeService, tmp_path: Path, files: list[Path]) -> None:
    fake.script["create_voice"] = [error(400, "Throttling.AllocationQuota", "您当前的配额为1000")]
    results = run(fake, tmp_path, files)
    assert [r.code for r in results] == ["Throttling.AllocationQuota"] * 3
    assert len(fake.calls("create_voice")) == 1


def test_prefix_is_checked_before_any_call(fake: FakeService, tmp_path: Path) -> None:
    for bad in ("Alice", "alice_01", "abcdefghijk", ""):
        with pytest.raises(ConfigError):
            enroller(fake, tmp_path, prefix=bad)
    assert fake.requests == []


def test_no_wait_leaves_voices_deploying(fake: FakeService, tmp_path: Path, files: list[Path]) -> None:
    (r,) = run(fake, tmp_path, files[:1], wait=False)
    assert r.voice_status == "DEPLOYING" and not fake.calls("query_voice")


def test_public_uploader_and_same_audio() -> None:
    up = PublicUploader("https://cdn.example.com/voices")
    assert up.upload(b"", object_name="x.wav", filename="my take.wav").url == "https://cdn.example.com/voices/my%20take.wav"
    assert same_audio("https://b/k?X-Amz-Signature=2", "https://b/k?X-Amz-Signature=1", "ff")
    assert same_audio("oss://dashscope-instant/d/abc123.wav", None, "abc123")
    assert not same_audio("https://b/other.wav", "https://b/k.wav", "abc123")
    assert not same_audio(None, "https://b/k.wav", "abc123")


def test_public_upload_sends_the_hosted_url(fake: FakeService, tmp_path: Path, files: list[Path]) -> None:
    (r,) = run(fake, tmp_path, files[:1], enroll={"upload": "public", "public_base_url": "https://cdn.example.com/v/"})
    assert fake.voices[r.voice_id]["url"] == "https://cdn.example.com/v/take0.wav"
    assert not [q for q in fake.requests if q.url.path.endswith("/uploads")]


# --- the `enroll:` section --------------------------------------------------------------------


def test_enroll_settings_are_strict() -> None:
    s = EnrollSettings.from_mapping({"upload": "s3", "s3": {"bucket": "b", "endpoint_url": "https://s3.oss-cn-beijing.aliyuncs.com",
                                                             "addressing_style": "virtual"}, "prefix": "x1"})
    assert s.s3 is not None and s.s3.bucket == "b" and s.target_model == "cosyvoice-v1"
    bad = [
        {"uplaod": "s3"},
        {"upload": "ftp"},
        {"upload": "s3"},
        {"upload": "public"},
        {"target_model": "cosyvoice-v9"},
        {"prefix": "Has_Caps"},
        {"wait": "yes"},
        {"s3": {"bucket": "b", "secret": "x"}},
        {"rate_limit_per_s": 0},
        {"language_hints": "zh"},
    ]
    for data in bad:
        with pytest.raises(ConfigError):
            EnrollSettings.from_mapping(data)


@pytest.mark.parametrize(("key", "value"), [
    ("request_timeout_s", float("nan")), ("request_timeout_s", float("inf")), ("reconcile_delay_s", float("-inf")),
    ("ready_timeout_s", 10**5000), ("quota", 10**5000), ("max_retries", 10**12), ("poll_interval_s", 1e300),
    ("reconcile_timeout_s", -1.0),
], ids=lambda v: v if isinstance(v, str) else type(v).__name__)
def test_enroll_numbers_that_are_not_finite_or_absurd_are_config_errors(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=rf"enroll\.{key}") as info:
        EnrollSettings.from_mapping({key: value})
    assert len(str(info.value)) < 200


def test_enroll_numbers_in_a_pipeline_yaml_are_config_errors(tmp_path: Path) -> None:
    from pipeline.config import load

    for text in ("request_timeout_s: .nan", "ready_timeout_s: .inf", "rate_limit_per_s: 1e999"):
        cfg = tmp_path / "p.yaml"
        cfg.write_text("enroll:\n  " + text + "\n")
        with pytest.raises(ConfigError, match=r"enroll\."):
            EnrollSettings.from_mapping(load(cfg).enroll)


def test_bundled_pipeline_yaml_enroll_section_is_valid() -> None:
    from pipeline.config import load

    EnrollSettings.from_mapping(load().enroll)
    cfg = parse({"enroll": {"upload": "public", "public_base_url": "https://x/"}})
    assert EnrollSettings.from_mapping(cfg.enroll).upload == "public"


# --- the stage ----------------------------------------------------------------------------------


def _clip(path: str = "take.wav") -> Clip:
    t = np.arange(16000 * 2) / 16000
    x = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[np.newaxis]
    return Clip(samples=x, sample_rate=16000, source=SourceInfo(path, "wav", "pcm_s16le", 16, 1, 16000, 2.0, 64044))


def test_stage_builds_strictly_and_pickles() -> None:
    stage = registry.build("enroll", {"prefix": "alice", "target_model": "cosyvoice-v3-plus", "wait": False})
    assert pickle.loads(pickle.dumps(stage)) == stage
    with pytest.raises(ConfigError, match="prefix"):
        registry.build("enroll", {"prefix": "Alice!"})
    with pytest.raises(ConfigError, match="target model"):
        registry.build("enroll", {"target_model": "tts-9"})


def test_stage_enrolls_the_encoded_clip_once(fake: FakeService, tmp_path: Path) -> None:
    stage = registry.build("enroll", {"prefix": "alice", "target_model": MODEL})
    clip = registry.build("encode")(_clip("/in/take.wav"))
    other = registry.build("encode")(_clip("/in/other.wav").replace(samples=_clip().samples * 0.5))
    with stage.open(enroller(fake, tmp_path)) as enroll:
        out = enroll(clip)
        info = out.metrics["enrollment"]
        assert info["status"] == "ok" and info["voice_id"] in fake.voices
        assert info["audio_sha256"] == audio_sha256(clip.encoded)
        assert enroll(clip).metrics["enrollment"]["action"] == "existing"
        assert len(fake.voices) == 1
        np.testing.assert_array_equal(out.samples, clip.samples)
        fake.final_status = "UNDEPLOYED"
        with pytest.raises(PipelineError) as info_err:
            enroll(other)
    assert info_err.value.code == "VoiceUndeployed"


def test_voices_help_shows_the_voices_exit_codes_and_documents_every_argument(capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    for argv in (["voices"], ["voices", "list"], ["voices", "show"], ["voices", "update"], ["voices", "delete"]):
        assert main([*argv, "--help"]) == 0
        out = capsys.readouterr().out
        assert "every file has a voice" not in out and "exit codes: 0 done, 1 the service" in out, argv
        assert "DASHSCOPE_BASE_URL" in out and "DASHSCOPE_TIMEOUT" in out
        positional = out.split("positional arguments:", 1)[1].split("options:", 1)[0] if argv != ["voices", "list"] else ""
        for line in positional.strip().splitlines():
            assert len(line.split()) > 1, f"{argv}: undocumented argument {line.strip()!r}"
    assert main(["enroll", "--help"]) == 0
    assert "exit codes: 0 every file has a voice" in capsys.readouterr().out


def test_synth_help_documents_every_argument_and_a_malformed_key_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pipeline.cli import main

    assert main(["synth", "--help"]) == 0
    out = capsys.readouterr().out
    listed = out.splitlines()
    listed = listed[listed.index("positional arguments:"):]
    for arg, words in [("TEXT", "the text to speak"), ("-o OUT.wav, --out OUT.wav", "the WAV file to write"),
                       ("--sample-rate HZ", "sample rate"), ("--timeout S", "give up after")]:
        i = next(i for i, line in enumerate(listed) if line.strip().startswith(arg))
        assert words in " ".join(listed[i : i + 2]), arg
    assert "exit codes: 0 the WAV was written" in out and "DASHSCOPE_WEBSOCKET_BASE_URL" in out
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-SECRET\nPART2")
    assert main(["synth", "--voice", "cosyvoice-v2-x-" + "0" * 32, "hi", "-o", str(tmp_path / "x.wav")]) == 2
    captured = capsys.readouterr()
    assert "DASHSCOPE_API_KEY holds a line break" in captured.err and len(captured.err.strip().splitlines()) == 1
    assert "SECRET" not in captured.err + captured.out and not (tmp_path / "x.wav").exists()
