"""End to end against the local emulator on 127.0.0.1: the client, every upload method, and the CLI."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile as sf
from conftest import DEPLOY_S, FIXTURES

from pipeline.cli import main
from pipeline.emulator.clock import ManualClock
from pipeline.service import enroll as enroll_mod
from pipeline.service.client import EnrollmentClient
from pipeline.service.errors import ServiceError
from pipeline.service.ledger import Ledger
from pipeline.service.settings import EnrollSettings, S3Settings, ServiceSettings
from pipeline.service.upload import S3Uploader

SPEECH = "speech_librivox_16k.wav"  # 26 s of one reader: passes the service's rules as it is
MODEL = "cosyvoice-v2"


def client_for(emulator: Any, **kw: Any) -> EnrollmentClient:
    """The project's client on the emulator's clock: its waits move that clock (no real sleeping), so a
    voice leaves DEPLOYING exactly when the client has waited the deploy delay."""
    kw.setdefault("sleep", emulator.clock.advance)
    kw.setdefault("clock", emulator.clock.monotonic)
    return EnrollmentClient(ServiceSettings.from_env(emulator.env()), **kw)


def variant(tmp_path: Path, gain: float, name: str | None = None) -> Path:
    """The reader at another level: other bytes (another voice), same verdict."""
    x, sr = sf.read(FIXTURES / SPEECH, dtype="float32")
    p = tmp_path / (name or f"speech_{int(gain * 100)}.wav")
    sf.write(p, x * gain, sr, subtype="PCM_16")
    return p


def enroller_for(emulator: Any, tmp_path: Path, settings: dict[str, Any] | None = None, **kw: Any) -> enroll_mod.Enroller:
    """An Enroller on the emulator's clock (as ``client_for``); the ledger keeps the real wall clock."""
    kw.setdefault("sleep", emulator.clock.advance)
    kw.setdefault("clock", emulator.clock.monotonic)
    s = EnrollSettings.from_mapping({"target_model": MODEL, "poll_interval_s": 1.0, **(settings or {})})
    return enroll_mod.make_enroller(s, prefix=kw.pop("prefix", "e2e"), ledger=tmp_path / "ledger.sqlite",
                                    service=ServiceSettings.from_env(emulator.env()), **kw)


def test_client_operations_against_the_emulator(emulator: Any, file_server: Any) -> None:
    with client_for(emulator) as c:
        vid = c.create_voice(MODEL, "e2e", file_server.url(SPEECH))
        assert vid.startswith(f"{MODEL}-e2e-")
        created = emulator.clock.time()
        assert c.wait_until_ready(vid, poll_interval_s=0.05)["status"] == "OK"
        assert emulator.clock.time() - created >= DEPLOY_S  # polled through DEPLOYING on the emulator's clock
        assert [v["voice_id"] for v in c.list_voices(prefix="e2e")] == [vid]
        info = c.query_voice(vid)
        assert (info["resource_link"], info["target_model"]) == (file_server.url(SPEECH), MODEL)
        c.update_voice(vid, file_server.url(SPEECH) + "?v=2")
        assert c.wait_until_ready(vid, poll_interval_s=0.05)["status"] == "OK"
        c.delete_voice(vid)
        with pytest.raises(ServiceError) as gone:
            c.query_voice(vid)
        assert gone.value.code == "BadRequest.ResourceNotExist" and gone.value.request_id
        with pytest.raises(ServiceError) as silent:
            c.create_voice(MODEL, "e2e", file_server.url("speech_arctic_slt_16k.wav"))
        assert silent.value.code.startswith("Audio.") and silent.value.status == 400 and not silent.value.ambiguous


def test_wrong_key_is_invalid_api_key(emulator: Any) -> None:
    env = {**emulator.env(), "DASHSCOPE_API_KEY": "sk-wrong"}
    with EnrollmentClient(ServiceSettings.from_env(env)) as c, pytest.raises(ServiceError) as info:
        c.list_voices()
    assert (info.value.code, info.value.status) == ("InvalidApiKey", 401) and "sk-wrong" not in str(info.value)


def test_temporary_storage_upload_and_oss_create(emulator: Any) -> None:
    with client_for(emulator) as c:
        url = c.upload_temporary((FIXTURES / SPEECH).read_bytes(), "take.wav")
        assert url.startswith("oss://")
        vid = c.create_voice(MODEL, "oss", url)
        assert c.wait_until_ready(vid, poll_interval_s=0.05)["status"] == "OK"
        assert c.query_voice(vid)["resource_link"] == url


def test_enroll_files_with_dashscope_upload_is_idempotent(emulator: Any, tmp_path: Path) -> None:
    files = [variant(tmp_path, 0.9), variant(tmp_path, 0.8)]
    e = enroller_for(emulator, tmp_path)
    try:
        results = e.enroll_files(files)
        again = e.enroll_files(files)
    finally:
        enroll_mod.close_enroller(e)
    assert [(r.status, r.voice_status, r.action) for r in results] == [("ok", "OK", "created")] * 2
    assert [r.action for r in again] == ["existing"] * 2
    with client_for(emulator) as c:
        assert c.count_voices("e2e") == 2


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Settings]:
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    settings = S3Settings(bucket="voices", endpoint_url=f"http://{host}:{port}", region="us-east-1",
                          addressing_style="path")
    S3Uploader(settings)._s3.create_bucket(Bucket="voices")
    yield settings
    server.stop()


def test_s3_upload_with_a_presigned_url(emulator: Any, tmp_path: Path, s3: S3Settings) -> None:
    uploader = S3Uploader(s3)
    e = enroller_for(emulator, tmp_path, uploader=uploader)
    try:
        (r,) = e.enroll_files([variant(tmp_path, 0.7)])
    finally:
        enroll_mod.close_enroller(e)
    assert (r.status, r.voice_status) == ("ok", "OK")
    with client_for(emulator) as c:
        link = c.query_voice(str(r.voice_id))["resource_link"]
    assert link.startswith(f"{s3.endpoint_url}/voices/voiceprep/{r.audio_sha256}.wav?") and "Signature" in link
    assert uploader.settings.key_prefix == "voiceprep/"


def test_s3_settings_from_pipeline_yaml_build_the_uploader(tmp_path: Path, s3: S3Settings) -> None:
    settings = EnrollSettings.from_mapping({"upload": "s3", "s3": {
        "bucket": s3.bucket, "endpoint_url": s3.endpoint_url, "region": "us-east-1", "addressing_style": "path"}})
    uploader = enroll_mod.make_uploader(settings, None)  # type: ignore[arg-type]
    url = uploader.upload(b"RIFF0000WAVE", object_name="abc.wav", filename="a.wav").url
    import httpx

    assert httpx.get(url).content == b"RIFF0000WAVE"


def test_public_base_url(emulator: Any, tmp_path: Path, file_server: Any) -> None:
    e = enroller_for(emulator, tmp_path, {"upload": "public", "public_base_url": file_server.origin})
    try:
        (r,) = e.enroll_files([FIXTURES / SPEECH])
    finally:
        enroll_mod.close_enroller(e)
    assert (r.status, r.voice_status) == ("ok", "OK")
    with client_for(emulator) as c:
        assert c.query_voice(str(r.voice_id))["resource_link"] == file_server.url(SPEECH)


class SlowCreates(httpx.BaseTransport):
    """Forwards every request to the emulator, except that create_voice takes ``create_s`` on the
    emulator's clock: the client's read timeout (its own setting) passes first and it gets a
    ReadTimeout, and the emulator carries the create out once the clock has passed its end. No
    wall-clock race: the order of events depends on the emulator's clock alone, which moves only
    when the client waits or a request times out."""

    def __init__(self, clock: ManualClock, create_s: float) -> None:
        self.inner = httpx.HTTPTransport()
        self.clock, self.create_s = clock, create_s
        self.running: list[tuple[float, httpx.Request]] = []
        self.creates = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.finish_due(self.clock.time())
        if request.url.path.endswith("/customization") and b'"create_voice"' in request.content:
            self.creates += 1
            self.running.append((self.clock.time() + self.create_s, request))
            self.clock.advance(float(request.extensions["timeout"]["read"]))
            raise httpx.ReadTimeout("timed out", request=request)
        return self.inner.handle_request(request)

    def finish_due(self, until: float) -> None:
        for item in [r for r in self.running if r[0] <= until]:
            self.running.remove(item)
            answer = self.inner.handle_request(item[1])
            answer.read()
            answer.close()

    def close(self) -> None:
        self.inner.close()


def test_a_create_slower_than_the_request_timeout_makes_one_voice_per_clip(emulator: Any, tmp_path: Path) -> None:
    # issue 16: request_timeout_s 3 and reconcile_delay_s 1 against a service that takes 5 s to create,
    # 5 clips: each create times out, the voice is found by polling the list, none is created twice
    slow = SlowCreates(emulator.clock, create_s=5.0)
    files = [variant(tmp_path, g) for g in (0.95, 0.85, 0.75, 0.65, 0.55)]
    e = enroller_for(emulator, tmp_path, {"request_timeout_s": 3, "reconcile_delay_s": 1}, transport=slow)
    try:
        results = e.enroll_files(files)
    finally:
        enroll_mod.close_enroller(e)
    slow.finish_due(float("inf"))  # whatever the service was still doing when the run ended
    assert [(r.status, r.action, r.voice_status) for r in results] == [("ok", "reconciled", "OK")] * 5, [
        r.line() for r in results]
    assert slow.creates == 5
    with client_for(emulator) as c:
        voices = {v["voice_id"] for v in c.iter_voices("e2e")}
    with Ledger(tmp_path / "ledger.sqlite") as lg:
        assert {r.voice_id for r in lg.rows()} == voices == {r.voice_id for r in results}
    assert len(voices) == 5


def test_dropped_connections_on_create_never_duplicate(emulator: Any, tmp_path: Path) -> None:
    # the emulator drops the connection before creating: the list is polled until reconcile_timeout_s
    # passes on the emulator's clock, then the clip is created again
    emulator.configure(faults={"seed": 3, "actions": {"create_voice": {"drop_rate": 0.5}}})
    files = [variant(tmp_path, g) for g in (0.95, 0.85, 0.75, 0.65)]
    e = enroller_for(emulator, tmp_path, {"create_attempts": 6})
    try:
        results = e.enroll_files(files)
    finally:
        enroll_mod.close_enroller(e)
    emulator.configure(faults={})
    assert all(r.status == "ok" for r in results), [r.line() for r in results]
    with client_for(emulator) as c:
        assert c.count_voices("e2e") == 4


def test_quota_counted_against_the_emulator(emulator: Any, tmp_path: Path, file_server: Any) -> None:
    emulator.configure(quota=1)
    with client_for(emulator) as c:
        c.create_voice(MODEL, "other", file_server.url(SPEECH))
    e = enroller_for(emulator, tmp_path)
    try:
        (r,) = e.enroll_files([variant(tmp_path, 0.5)])
    finally:
        enroll_mod.close_enroller(e)
    assert r.code == "Throttling.AllocationQuota" and "voices delete" in r.hint


# --- the CLI ---------------------------------------------------------------------------------------


@pytest.fixture
def service_env(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The emulator in the environment, for the CLI. The CLI's client sleeps for real and its clock
    cannot be handed in, so voices are ready at their first query (DEPLOYING lasts no time)."""
    emulator.configure(deploy_delay_s=0.0)
    for k, v in emulator.env().items():
        monkeypatch.setenv(k, v)
    for k in ("DASHSCOPE_WORKSPACE", "DASHSCOPE_API_REGION", "DASHSCOPE_BASE_URL"):
        monkeypatch.delenv(k, raising=False)
    return emulator


def test_cli_enroll_end_to_end(service_env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(FIXTURES / SPEECH, src / "reader.wav")
    shutil.copy(FIXTURES / "speech_arctic_slt_16k.wav", src / "short.wav")
    out = tmp_path / "out"
    args = ["enroll", str(src), "--prefix", "cli", "--target-model", MODEL, "--out", str(out), "--jobs", "1",
            "--config", str(config_with(tmp_path, poll_interval_s=0.05))]
    assert main(args) == 1  # the 3 s clip is refused by the pipeline
    text = capsys.readouterr().out
    lines = [json.loads(x) for x in (out / "enroll-report.jsonl").read_text().splitlines()]
    ok = [x for x in lines if x["status"] == "ok"]
    assert len(lines) == 2 and len(ok) == 1
    vid = ok[0]["voice_id"]
    assert vid.startswith(f"{MODEL}-cli-") and ok[0]["voice_status"] == "OK" and ok[0]["enrollment"]["action"] == "created"
    assert vid in text and "1 ok, 1 refused" in text
    assert (out / "voiceprep-ledger.sqlite").is_file()
    key = service_env.api_key
    assert key not in text and key not in (out / "enroll-report.jsonl").read_text()
    assert key.encode() not in (out / "voiceprep-ledger.sqlite").read_bytes()

    assert main(args) == 1
    capsys.readouterr()
    again = [json.loads(x) for x in (out / "enroll-report.jsonl").read_text().splitlines()][2:]
    assert [x["voice_id"] for x in again if x["status"] == "ok"] == [vid]
    assert next(x for x in again if x["status"] == "ok")["enrollment"]["action"] == "existing"

    assert main(["voices", "list", "--prefix", "cli", "--json"]) == 0
    listed = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [v["voice_id"] for v in listed] == [vid]
    assert main(["voices", "show", vid, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "OK"
    ledger = str(out / "voiceprep-ledger.sqlite")
    assert main(["voices", "delete", vid, "--ledger", ledger]) == 0
    assert f"{vid}: deleted" in capsys.readouterr().out
    with Ledger(ledger) as lg:
        assert lg.by_voice(vid).status == "deleted"  # type: ignore[union-attr]
    assert main(["voices", "show", vid]) == 1
    err = capsys.readouterr().err
    assert "BadRequest.ResourceNotExist" in err and "voices list" in err and len(err.strip().splitlines()) == 1


def test_cli_enroll_as_is_and_update(service_env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = variant(tmp_path, 0.9, "a.wav")
    out = tmp_path / "out"
    cfg = str(config_with(tmp_path, poll_interval_s=0.05))
    assert main(["enroll", str(a), "--as-is", "--prefix", "asis", "--target-model", MODEL, "--out", str(out),
                 "--json", "--config", cfg]) == 0
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert line["output"] == str(a) and line["voice_status"] == "OK"
    b = variant(tmp_path, 0.8, "b.wav")
    assert main(["voices", "update", line["voice_id"], str(b), "--wait", "--json", "--config", cfg]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "OK"


def config_with(tmp_path: Path, **enroll: Any) -> Path:
    """The bundled pipeline.yaml with these `enroll:` values."""
    import yaml

    from pipeline.config import default_config_path

    data = yaml.safe_load(default_config_path().read_text(encoding="utf-8"))
    data["enroll"] = {**(data.get("enroll") or {}), **enroll}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_cli_no_wait_returns_as_soon_as_the_voice_is_created(
    service_env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service_env.configure(deploy_delay_s=3600.0)  # the review never ends while the test runs
    cfg = config_with(tmp_path, ready_timeout_s=0.001, poll_interval_s=0.001)  # waiting would fail at once
    a = variant(tmp_path, 0.9, "a.wav")
    args = ["enroll", str(a), "--as-is", "--prefix", "nowait", "--target-model", MODEL, "--out", str(tmp_path / "o"),
            "--config", str(cfg), "--json"]
    assert main([*args, "--no-wait"]) == 0
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (line["status"], line["voice_status"], line["enrollment"]["action"]) == ("ok", "DEPLOYING", "created")
    assert main(args) == 1  # waiting is the default: here it gives up at once
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert line["code"] == "VoiceNotReady"


def test_cli_enroll_a_non_utf8_file_name(service_env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os

    src = tmp_path / "in"
    src.mkdir()
    name = os.fsdecode(b"caf\xe9 take.wav")  # Latin-1 bytes: not UTF-8
    shutil.copy(FIXTURES / SPEECH, src / name)
    out = tmp_path / "out"
    cfg = config_with(tmp_path, poll_interval_s=0.05)
    assert main(["enroll", str(src), "--as-is", "--prefix", "names", "--target-model", MODEL, "--out", str(out),
                 "--config", str(cfg)]) == 0
    text = capsys.readouterr().out
    shown = str(src / "caf\\xe9 take.wav")
    assert f"{shown}: {MODEL}-names-" in text and "1 ok, 0 refused" in text
    (row,) = [json.loads(x) for x in (out / "enroll-report.jsonl").read_text(encoding="utf-8").splitlines()]
    assert row["input"] == row["output"] == shown and row["enrollment"]["input"] == shown
    with Ledger(out / "voiceprep-ledger.sqlite") as lg:
        (lrow,) = lg.rows()
    assert lrow.source == shown and lrow.status == "OK"


def test_cli_against_a_server_echoing_the_key_keeps_it_out_of_every_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import logging

    from fake_dashscope import KEY, EchoingService

    caplog.set_level(logging.DEBUG)
    with EchoServer(EchoingService()) as server:
        for k in ("DASHSCOPE_WORKSPACE", "DASHSCOPE_API_REGION", "DASHSCOPE_REGION", "DASHSCOPE_BASE_URL",
                  "DASHSCOPE_HTTP_BASE_URL", "DASHSCOPE_TIMEOUT", "DASHSCOPE_MAX_RETRIES"):
            monkeypatch.delenv(k, raising=False)
        monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
        monkeypatch.setenv("DASHSCOPE_BASE_URL", server.base_url)
        out = tmp_path / "out"
        cfg = config_with(tmp_path, upload="public", public_base_url="https://files.test/", poll_interval_s=0.01)
        a = variant(tmp_path, 0.9, "a.wav")
        assert main(["enroll", str(a), "--as-is", "--prefix", "echo", "--target-model", MODEL, "--out", str(out),
                     "--config", str(cfg)]) == 0
        (row,) = [json.loads(x) for x in (out / "enroll-report.jsonl").read_text().splitlines()]
        vid = row["voice_id"]
        assert main(["voices", "list", "--json", "--config", str(cfg)]) == 0
        assert main(["voices", "show", vid, "--config", str(cfg)]) == 0
        assert main(["voices", "delete", vid, "--ledger", str(out / "voiceprep-ledger.sqlite")]) == 0
        assert main(["voices", "show", vid]) == 1
        captured = capsys.readouterr()
    assert "Bearer ***" in row["enrollment"]["request_ids"]  # the echo was there, scrubbed
    assert "request Bearer ***" in captured.err and len(captured.err.strip().splitlines()) == 1
    stored = b"".join(f.read_bytes() for f in out.iterdir() if f.is_file())
    texts = [captured.out, captured.err, *(r.getMessage() for r in caplog.records)]
    assert b"SECRET" not in stored and not [t for t in texts if "SECRET" in t]


def test_cli_refuses_a_key_holding_a_line_break_without_printing_it(
    service_env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-SECRET\nPART2")
    out = tmp_path / "out"
    a = variant(tmp_path, 0.9, "a.wav")
    assert main(["voices", "list"]) == 2
    assert main(["enroll", str(a), "--as-is", "--prefix", "nl", "--target-model", MODEL, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 2 and all("DASHSCOPE_API_KEY holds a line break" in x for x in lines)
    stored = b"".join(f.read_bytes() for f in out.rglob("*") if f.is_file()) if out.exists() else b""
    texts = [captured.out, captured.err, *(r.getMessage() for r in caplog.records)]
    assert not [t for t in texts if "SECRET" in t or "PART2" in t] and b"SECRET" not in stored


class EchoServer:
    """A loopback HTTP server (127.0.0.1, a free port) in front of a FakeService: real sockets, real
    headers, the fake's answers (an EchoingService echoes the key back in them)."""

    def __init__(self, fake: Any) -> None:
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base signature
                return None

            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                request = httpx.Request(self.command, f"http://127.0.0.1{self.path}", headers=dict(self.headers.items()),
                                        content=body)
                answer = fake.handle(request)
                self.send_response(answer.status_code, answer.reason_phrase)
                for k, v in answer.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                        self.send_header(k, v)
                self.send_header("content-length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _serve  # http.server's method names

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def __enter__(self) -> EchoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_cli_usage_errors(service_env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    wav = FIXTURES / SPEECH
    assert main(["enroll", str(wav), "--prefix", "Bad_Prefix", "--out", str(tmp_path)]) == 2
    assert "prefix" in capsys.readouterr().err
    assert main(["enroll", str(wav), "--prefix", "ok", "--target-model", "cosyvoice-v9", "--out", str(tmp_path)]) == 2
    assert "cosyvoice-v1" in capsys.readouterr().err
    assert main(["enroll", str(tmp_path / "missing.wav"), "--prefix", "ok"]) == 2
    cfg = tmp_path / "p.yaml"
    cfg.write_text("enroll:\n  upload: ftp\n")
    assert main(["enroll", str(wav), "--prefix", "ok", "--config", str(cfg)]) == 2
    assert "upload" in capsys.readouterr().err
    monkeypatch.delenv("DASHSCOPE_API_KEY")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["voices", "list"]) == 2
    assert "DASHSCOPE_API_KEY" in capsys.readouterr().err
    assert main(["voices"]) == 2


def test_stage_in_a_pipeline_against_the_emulator(service_env: Any, tmp_path: Path) -> None:
    from pipeline.audio_io import decode
    from pipeline.config import parse

    cfg = parse({"run": ["encode", "validate", {"enroll": {"prefix": "stage", "target_model": MODEL}}],
                 "enroll": {"poll_interval_s": 0.05, "ledger": str(tmp_path / "l.sqlite")}})
    clip = decode(str(FIXTURES / SPEECH))
    with cfg.run.open() as run:
        out = run(clip)
        assert out.metrics["enrollment"]["voice_status"] == "OK"
        assert run(clip).metrics["enrollment"]["action"] == "existing"
    with Ledger(tmp_path / "l.sqlite") as lg:
        assert len(lg.rows()) == 1


def test_run_with_enroll_stage_uses_the_configs_enroll_section(
    service_env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`voiceprep run --config` with an enroll stage: the workers take that file's `enroll:`
    section (its ledger path here), not the bundled pipeline.yaml's."""
    import yaml

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(FIXTURES / SPEECH, src / "reader.wav")
    ledger = tmp_path / "custom-ledger.sqlite"
    config = tmp_path / "with-enroll.yaml"
    config.write_text(yaml.safe_dump({
        "run": ["resample", "window", "loudness", "edges", "encode", "validate",
                {"enroll": {"prefix": "runcfg", "target_model": MODEL}}],
        "enroll": {"poll_interval_s": 0.05, "ledger": str(ledger)},
    }))
    code = main(["run", str(src), "--out", str(tmp_path / "out"), "--config", str(config), "--jobs", "2",
                 "--report", str(tmp_path / "r.jsonl")])
    assert code == 0, capsys.readouterr()
    row = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])
    assert row["status"] == "ok"
    with Ledger(ledger) as lg:
        rows = lg.rows()
    assert len(rows) == 1
    assert rows[0].prefix == "runcfg" and rows[0].voice_id is not None and "runcfg" in rows[0].voice_id


def test_run_with_a_bad_enroll_section_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"run": ["encode", "validate", "enroll"], "enroll": {"upload": "ftp"}}))
    (tmp_path / "in").mkdir()
    shutil.copy(FIXTURES / SPEECH, tmp_path / "in" / "a.wav")
    assert main(["run", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "upload" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.wav"))
