"""The enrollment client over httpx.MockTransport: bodies as the SDK sends them, every error branch."""

from __future__ import annotations

import json
import logging
import pickle
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_dashscope import BASE, KEY, EchoingService, FakeService, error

from pipeline.errors import ConfigError
from pipeline.service.client import EnrollmentClient
from pipeline.service.errors import ServiceError
from pipeline.service.ratelimit import Backoff, TokenBucket
from pipeline.service.settings import (
    BEIJING_BASE_URL,
    INTERNATIONAL_BASE_URL,
    ApiKey,
    ServiceSettings,
    workspace_base_url,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def make(fake: FakeService | httpx.MockTransport, *, workspace: str | None = None, **kw: Any) -> tuple[EnrollmentClient, FakeClock]:
    clock = FakeClock()
    transport = fake.transport() if isinstance(fake, FakeService) else fake
    settings = ServiceSettings(ApiKey(KEY), BASE, workspace)
    client = EnrollmentClient(settings, transport=transport, sleep=clock.sleep, clock=clock, rng=lambda: 0.5, **kw)
    return client, clock


# --- requests exactly as the SDK sends them (bodies copied from sdk-captures/log1.jsonl) ---------

SDK_BODIES = [
    (lambda c: c.create_voice("cosyvoice-v2", "demo", "https://example.com/a.wav"),
     '{"model": "voice-enrollment", "parameters": {}, "input": {"action": "create_voice", "target_model": '
     '"cosyvoice-v2", "prefix": "demo", "url": "https://example.com/a.wav"}}'),
    (lambda c: c.create_voice("cosyvoice-v3-plus", "demo", "https://e/a.wav", language_hints=["zh"],
                              max_prompt_audio_length=10.0),
     '{"model": "voice-enrollment", "parameters": {}, "input": {"action": "create_voice", "target_model": '
     '"cosyvoice-v3-plus", "prefix": "demo", "url": "https://e/a.wav", "language_hints": ["zh"], '
     '"max_prompt_audio_length": 10.0}}'),
    (lambda c: c.list_voices(),
     '{"model": "voice-enrollment", "parameters": {}, "input": {"action": "list_voice", "page_index": 0, '
     '"page_size": 10}}'),
    (lambda c: c.list_voices(prefix="demo", page_index=1, page_size=5),
     '{"model": "voice-enrollment", "parameters": {}, "input": {"action": "list_voice", "prefix": "demo", '
     '"page_index": 1, "page_size": 5}}'),
    (lambda c: c.query_voice("cosyvoice-v2-demo-abc"),
     '{"model": "voice-enrollment", "parameters": {}, "input": {"action": "query_voice", "voice_id": '
     '"cosyvoice-v2-demo-abc"}}'),
    (lambda c: c.update_voice("cosyvoice-v2-demo-abc", "https://example.com/b.wav"),
     '{"model": "voice-enrollment", "parameters": {}, "input": {"action": "update_voice", "voice_id": '
     '"cosyvoice-v2-demo-abc", "url": "https://example.com/b.wav"}}'),
    (lambda c: c.delete_voice("cosyvoice-v2-demo-abc"),
     '{"model": "voice-enrollment", "parameters": {}, "input": {"action": "delete_voice", "voice_id": '
     '"cosyvoice-v2-demo-abc"}}'),
]


@pytest.mark.parametrize(("call", "body"), SDK_BODIES)
def test_request_bodies_and_headers_match_the_sdk(call: Any, body: str) -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200, json={"output": {"voice_id": "v", "voice_list": []}, "request_id": "r"})

    client, _ = make(httpx.MockTransport(handler))
    call(client)
    (req,) = seen
    assert req.method == "POST"
    assert str(req.url) == f"{BASE}/services/audio/tts/customization"
    assert req.content.decode() == body
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.headers["content-type"] == "application/json; charset=utf-8"
    assert req.headers["accept"] == "application/json; charset=utf-8"
    assert "x-dashscope-workspace" not in req.headers
    assert "x-dashscope-ossresourceresolve" not in req.headers


def test_kwargs_pass_through_and_oss_url_sends_the_resolve_header() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200, json={"output": {"voice_id": "v"}, "request_id": "r"})

    client, _ = make(httpx.MockTransport(handler))
    client.create_voice("cosyvoice-v3.5-plus", "demo", "oss://dashscope-instant/x/a.wav", enable_preprocess=True)
    # sdk-captures/log3.jsonl
    assert seen[0].content.decode() == (
        '{"model": "voice-enrollment", "parameters": {}, "input": {"action": "create_voice", "target_model": '
        '"cosyvoice-v3.5-plus", "prefix": "demo", "url": "oss://dashscope-instant/x/a.wav", "enable_preprocess": true}}'
    )
    assert seen[0].headers["x-dashscope-ossresourceresolve"] == "enable"
    client.update_voice("v", "oss://dashscope-instant/x/b.wav")
    assert seen[1].headers["x-dashscope-ossresourceresolve"] == "enable"


def test_workspace_header() -> None:
    fake = FakeService()
    client, _ = make(fake, workspace="ws-1")
    client.list_voices()
    assert fake.requests[0].headers["x-dashscope-workspace"] == "ws-1"


def test_operations_return_what_the_sdk_returns() -> None:
    fake = FakeService()
    client, _ = make(fake)
    vid = client.create_voice("cosyvoice-v2", "demo", "https://example.com/a.wav")
    assert vid.startswith("cosyvoice-v2-demo-")
    assert [v["voice_id"] for v in client.list_voices(prefix="demo")] == [vid]
    info = client.query_voice(vid)
    assert info["resource_link"] == "https://example.com/a.wav"
    assert client.update_voice(vid, "https://example.com/b.wav") is None
    assert client.query_voice(vid)["resource_link"] == "https://example.com/b.wav"
    assert client.delete_voice(vid) is None
    assert client.list_voices() == []
    assert client.last_request_id


def test_iter_voices_walks_every_page() -> None:
    fake = FakeService()
    ids = {fake.add_voice("demo", f"https://e/{i}.wav") for i in range(23)}
    client, _ = make(fake)
    assert {v["voice_id"] for v in client.iter_voices("demo", page_size=10)} == ids
    assert len(fake.calls("list_voice")) == 4  # 10 + 10 + 3 + an empty page
    assert client.count_voices() == 23


# --- errors ------------------------------------------------------------------------------------

DOCUMENTED = [
    (400, "InvalidParameter", "prefix should not be longer than 10 characters"),
    (400, "BadRequest.EmptyInput", "Required input parameter missing from request."),
    (400, "BadRequest.EmptyModel", 'Required parameter "model" missing from request.'),
    (400, "BadRequest.IllegalInput", "The input parameter requires json format."),
    (400, "BadRequest.UnsupportedFileFormat", "File format unsupported."),
    (415, "BadRequest.UnsupportedFileFormat", "File format unsupported."),
    (400, "BadRequest.InputDownloadFailed", "Failed to download the input file: xxx"),
    (400, "BadRequest.ResourceNotExist", "The Required resource not exist."),
    (416, "BadRequest.ResourceNotExist", "The Required resource not exist."),
    (400, "Throttling.AllocationQuota", "您当前的配额为1000"),
    (400, "Audio.AudioShortError", "valid audio too short!"),
    (400, "Audio.AudioSilentError", "silent audio error!"),
    (430, "Audio.AudioSilentError", "Silent file unsupported."),
    (400, "Audio.DecoderError", "Decoder audio file failed."),
    (430, "Audio.FileSizeExceed", "File too large"),
    (400, "Audio.AudioRateError", "File sample rate unsupported"),
    (401, "InvalidApiKey", "Invalid API-key provided."),
    (401, "NOT AUTHORIZED", "workspace access denied"),
    (403, "AccessDenied", "Access denied."),
    (403, "Model.AccessDenied", "Model access denied."),
]


@pytest.mark.parametrize(("status", "code", "message"), DOCUMENTED)
def test_each_documented_client_error_is_raised_once_with_its_facts(status: int, code: str, message: str) -> None:
    fake = FakeService(script={"create_voice": [error(status, code, message, rid="rid-42")]})
    client, clock = make(fake)
    with pytest.raises(ServiceError) as info:
        client.create_voice("cosyvoice-v2", "demo", "https://e/a.wav")
    exc = info.value
    assert (exc.status, exc.code, exc.message, exc.request_id, exc.action) == (
        status, code, message, "rid-42", "create_voice")
    assert not exc.retryable and not exc.ambiguous
    assert len(fake.requests) == 1 and clock.sleeps == []
    assert code in str(exc) and "rid-42" in str(exc) and f"HTTP {status}" in str(exc)
    assert exc.hint  # every documented code has a plain hint


@pytest.mark.parametrize(("status", "code"), [
    (429, "Throttling"), (429, "Throttling.RateQuota"), (429, "Throttling.BurstRate"),
    (500, "InternalError"), (503, "ModelUnavailable"), (503, "ModelServingError"),
])
def test_retryable_errors_are_retried_on_idempotent_actions(status: int, code: str) -> None:
    fake = FakeService(script={"list_voice": [error(status, code, "busy"), error(status, code, "busy")]})
    client, clock = make(fake)
    assert client.list_voices() == []
    assert len(fake.calls("list_voice")) == 3
    assert len(clock.sleeps) == 2 and clock.sleeps[0] < clock.sleeps[1]


def test_429_then_success_on_create_honours_retry_after() -> None:
    throttled = httpx.Response(429, json={"request_id": "r1", "code": "Throttling.RateQuota",
                                          "message": "Requests rate limit exceeded"}, headers={"Retry-After": "7"})
    fake = FakeService(script={"create_voice": [throttled]})
    client, clock = make(fake)
    vid = client.create_voice("cosyvoice-v2", "demo", "https://e/a.wav")
    assert vid in fake.voices and len(fake.voices) == 1
    assert clock.sleeps == [7.0]


@pytest.mark.parametrize("value", ["soon", "", "nan", "inf", "-inf", "Wed, 99 Foo 2025 99:99:99 GMT", "1e999"])
def test_unparsable_retry_after_falls_back_to_the_backoff(value: str) -> None:
    throttled = httpx.Response(429, json={"request_id": "r1", "code": "Throttling.RateQuota", "message": "slow down"},
                               headers={"Retry-After": value, "Retry-After-Ms": value})
    fake = FakeService(script={"list_voice": [throttled]})
    client, clock = make(fake, backoff=Backoff(base_s=1.0, max_s=8.0))
    assert client.list_voices() == []
    assert clock.sleeps == [0.75]  # the first backoff step (rng 0.5), not an exception nor a server delay


def test_retries_give_up_after_max_retries() -> None:
    fake = FakeService(script={"query_voice": [error(500, "InternalError", "Internal server error!")] * 10})
    client, clock = make(fake, max_retries=2)
    with pytest.raises(ServiceError) as info:
        client.query_voice("x")
    assert info.value.code == "InternalError" and info.value.status == 500
    assert len(fake.requests) == 3 and len(clock.sleeps) == 2


def test_create_is_never_retried_after_a_5xx() -> None:
    fake = FakeService(script={"create_voice": [error(500, "InternalError", "request asr failed")]})
    client, clock = make(fake)
    with pytest.raises(ServiceError) as info:
        client.create_voice("cosyvoice-v2", "demo", "https://e/a.wav")
    assert info.value.ambiguous and info.value.retryable and info.value.message == "request asr failed"
    assert len(fake.requests) == 1 and clock.sleeps == []


def test_create_timeout_is_ambiguous_and_not_retried() -> None:
    fake = FakeService(script={"create_voice": [httpx.ReadTimeout("read timed out")]})
    client, _ = make(fake)
    with pytest.raises(ServiceError) as info:
        client.create_voice("cosyvoice-v2", "demo", "https://e/a.wav")
    assert info.value.code == "RequestTimeout" and info.value.ambiguous and info.value.status is None
    assert len(fake.requests) == 1


def test_create_dropped_connection_is_ambiguous() -> None:
    fake = FakeService(script={"create_voice": [httpx.RemoteProtocolError("Server disconnected")]})
    client, _ = make(fake)
    with pytest.raises(ServiceError) as info:
        client.create_voice("cosyvoice-v2", "demo", "https://e/a.wav")
    assert info.value.code == "ConnectionError" and info.value.ambiguous


def test_create_is_retried_when_the_request_never_left() -> None:
    fake = FakeService(script={"create_voice": [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow")]})
    client, clock = make(fake)
    vid = client.create_voice("cosyvoice-v2", "demo", "https://e/a.wav")
    assert list(fake.voices) == [vid] and len(clock.sleeps) == 2


def test_transport_errors_are_retried_for_idempotent_actions() -> None:
    fake = FakeService(script={"list_voice": [httpx.ReadTimeout("t"), httpx.RemoteProtocolError("dropped")]})
    client, _ = make(fake)
    assert client.list_voices() == []


def test_200_with_a_code_is_an_error() -> None:
    body = {"request_id": "rid-200", "code": "InvalidParameter", "message": "bad target_model"}
    fake = FakeService(script={"query_voice": [httpx.Response(200, json=body)]})
    client, _ = make(fake)
    with pytest.raises(ServiceError) as info:
        client.query_voice("x")
    assert (info.value.status, info.value.code, info.value.request_id) == (200, "InvalidParameter", "rid-200")
    assert len(fake.requests) == 1


def test_non_json_error_body_gives_a_clear_error() -> None:
    html = httpx.Response(502, text="<html><body>Bad Gateway</body></html>", headers={
        "content-type": "text/html", "x-request-id": "rid-gw"})
    fake = FakeService(script={"delete_voice": [html] * 10})
    client, _ = make(fake, max_retries=1)
    with pytest.raises(ServiceError) as info:
        client.delete_voice("x")
    exc = info.value
    assert exc.code == "Unknown" and exc.status == 502 and exc.request_id == "rid-gw"
    assert "HTTP 502" in exc.message and "text/html" in exc.message and "Bad Gateway" in exc.message


def test_an_answer_that_cannot_be_decoded_is_an_error_not_a_traceback() -> None:
    class NotGzip(httpx.SyncByteStream):
        def __iter__(self) -> Any:
            yield b"not gzip at all"

    def broken(request: httpx.Request) -> httpx.Response:  # says gzip, is not: httpx cannot decode it
        return httpx.Response(200, headers={"content-encoding": "gzip"}, stream=NotGzip())

    fake = FakeService(script={"list_voice": [broken] * 10, "create_voice": [broken]})
    client, _ = make(fake, max_retries=1)
    with pytest.raises(ServiceError) as info:
        client.list_voices()
    assert info.value.code == "Unknown" and "could not be decoded" in info.value.message
    assert len(fake.calls("list_voice")) == 2  # retried as any transport failure
    with pytest.raises(ServiceError) as info:
        client.create_voice("cosyvoice-v2", "demo", "https://e/a.wav")
    assert info.value.ambiguous and len(fake.calls("create_voice")) == 1


def test_non_json_404_hints_at_the_base_url() -> None:
    fake = FakeService(script={"list_voice": [httpx.Response(404, text="Not Found")]})
    client, _ = make(fake)
    with pytest.raises(ServiceError) as info:
        client.list_voices()
    assert "DASHSCOPE_HTTP_BASE_URL" in info.value.hint


def test_200_without_json_or_output_is_an_error() -> None:
    fake = FakeService(script={"query_voice": [httpx.Response(200, text="ok")],
                               "create_voice": [httpx.Response(200, json={"request_id": "r", "output": {}})]})
    client, _ = make(fake)
    with pytest.raises(ServiceError, match="not a JSON object"):
        client.query_voice("x")
    with pytest.raises(ServiceError, match="voice_id") as info:
        client.create_voice("cosyvoice-v2", "demo", "https://e/a.wav")
    assert info.value.ambiguous


def test_delete_retry_that_finds_the_voice_gone_counts_as_done() -> None:
    fake = FakeService()
    vid = fake.add_voice("demo", "https://e/a.wav")

    def lost_answer(req: httpx.Request) -> httpx.Response:
        fake.voices.pop(vid)
        raise httpx.ReadTimeout("lost", request=req)

    fake.script["delete_voice"] = [lost_answer]
    client, _ = make(fake)
    client.delete_voice(vid)
    assert len(fake.calls("delete_voice")) == 2


def test_bad_prefix_is_refused_before_any_call() -> None:
    fake = FakeService()
    client, _ = make(fake)
    for prefix in ("", "Demo", "toolongprefix", "a_b", "a-b"):
        with pytest.raises(ServiceError, match="prefix"):
            client.create_voice("cosyvoice-v2", prefix, "https://e/a.wav")
    assert fake.requests == []


# --- waiting ---------------------------------------------------------------------------------


def test_wait_until_ready_polls_with_growing_intervals() -> None:
    fake = FakeService(deploy_polls=3)
    client, clock = make(fake)
    vid = client.create_voice("cosyvoice-v2", "demo", "https://e/a.wav")
    info = client.wait_until_ready(vid, poll_interval_s=2.0)
    assert info["status"] == "OK"
    assert clock.sleeps == [2.0, 3.0, 4.5]


def test_wait_until_ready_returns_undeployed() -> None:
    fake = FakeService(final_status="UNDEPLOYED")
    client, _ = make(fake)
    vid = client.create_voice("cosyvoice-v2", "demo", "https://e/a.wav")
    assert client.wait_until_ready(vid)["status"] == "UNDEPLOYED"


def test_wait_until_ready_times_out() -> None:
    fake = FakeService(deploy_polls=10**6)
    client, clock = make(fake)
    vid = client.create_voice("cosyvoice-v2", "demo", "https://e/a.wav")
    with pytest.raises(ServiceError) as info:
        client.wait_until_ready(vid, timeout_s=60, poll_interval_s=5)
    assert info.value.code == "VoiceNotReady" and "voices show" in info.value.hint
    assert sum(clock.sleeps) == pytest.approx(60.0)


# --- temporary storage -------------------------------------------------------------------------


def test_upload_temporary_is_the_sdk_form_without_authorization() -> None:
    fake = FakeService()
    client, _ = make(fake)
    url = client.upload_temporary(b"RIFF....WAVE", "abc.wav")
    assert url == "oss://dashscope-instant/abc/voice-enrollment/xyz/abc.wav"
    policy, post = fake.requests
    assert policy.method == "GET" and policy.url.path == "/api/v1/uploads"
    assert dict(policy.url.params) == {"action": "getPolicy", "model": "voice-enrollment"}
    assert policy.headers["authorization"] == f"Bearer {KEY}"
    assert "authorization" not in post.headers and "date" in post.headers
    body = post.content
    names = [n.decode() for n in re.findall(rb'form-data; name="([^"]+)"', body)]
    assert names == ["OSSAccessKeyId", "Signature", "policy", "key", "x-oss-object-acl", "x-oss-forbid-overwrite",
                     "success_action_status", "x-oss-content-type", "file"]
    assert b"audio/x-wav" in body and b"RIFF....WAVE" in body


def test_expired_policy_is_fetched_again() -> None:
    expired = httpx.Response(403, text="<Error><Code>AccessDenied</Code><Message>Invalid according to Policy: "
                             "Policy expired.</Message><RequestId>oss-1</RequestId></Error>")
    fake = FakeService(script={"upload": [expired]})
    client, _ = make(fake)
    assert client.upload_temporary(b"x", "a.wav").startswith("oss://")
    assert [r.method for r in fake.requests] == ["GET", "POST", "GET", "POST"]


def test_upload_error_is_reported_with_the_storage_code() -> None:
    bad = httpx.Response(400, text="<Error><Code>EntityTooLarge</Code><Message>too big</Message></Error>")
    fake = FakeService(script={"upload": [bad]})
    client, _ = make(fake)
    with pytest.raises(ServiceError) as info:
        client.upload_temporary(b"x", "a.wav")
    assert (info.value.code, info.value.message, info.value.action) == ("EntityTooLarge", "too big", "upload")


# --- pacing ------------------------------------------------------------------------------------


def test_token_bucket_paces_to_the_rate_after_a_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, clock=clock, sleep=clock.sleep)
    for _ in range(30):
        bucket.acquire()
    assert clock.now == pytest.approx(2.0)  # 10 at once, then 20 more at 10/s


def test_token_bucket_admits_without_waiting_or_debt() -> None:
    clock = FakeClock()
    bucket = TokenBucket(4.0, burst=2, clock=clock, sleep=clock.sleep)
    assert [bucket.try_acquire() for _ in range(4)] == [True, True, False, False]
    clock.now += 0.25  # one token back at 4/s; the refusals above took none
    assert [bucket.try_acquire() for _ in range(2)] == [True, False]
    clock.now += 10.0  # refills up to the burst, no further
    assert [bucket.try_acquire() for _ in range(3)] == [True, True, False]
    assert clock.sleeps == []


def test_client_requests_go_through_the_rate_limit() -> None:
    fake = FakeService()
    client, clock = make(fake, rate_limit_per_s=2.0)
    for _ in range(6):
        client.list_voices()
    assert clock.now == pytest.approx(2.0)


def test_backoff_is_jittered_capped_and_respects_retry_after() -> None:
    b = Backoff(base_s=1.0, max_s=8.0)
    assert [b.delay(n, rng=lambda: 0.0) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert [b.delay(n, rng=lambda: 1.0) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert b.delay(1, retry_after_s=30.0, rng=lambda: 0.5) == 30.0


# --- settings and secrets ------------------------------------------------------------------------


def test_settings_from_env_like_the_sdk(tmp_path: Path) -> None:
    s = ServiceSettings.from_env({"DASHSCOPE_API_KEY": "sk-1"}, home=tmp_path)
    assert s.base_url == BEIJING_BASE_URL and s.workspace is None and s.api_key.reveal() == "sk-1"
    s = ServiceSettings.from_env({"DASHSCOPE_API_KEY": "sk-1", "DASHSCOPE_HTTP_BASE_URL": INTERNATIONAL_BASE_URL + "/",
                                  "DASHSCOPE_WORKSPACE": "ws-9"}, home=tmp_path)
    assert s.base_url == INTERNATIONAL_BASE_URL and s.workspace == "ws-9"
    s = ServiceSettings.from_env({"DASHSCOPE_API_KEY": "sk-1", "DASHSCOPE_API_REGION": "ap-southeast-1",
                                  "DASHSCOPE_WORKSPACE_ID": "llm-abc"}, home=tmp_path)
    assert s.base_url == "https://llm-abc.ap-southeast-1.maas.aliyuncs.com/api/v1"
    assert workspace_base_url("ws1") == "https://ws1.cn-beijing.maas.aliyuncs.com/api/v1"
    (tmp_path / ".dashscope").mkdir()
    (tmp_path / ".dashscope" / "api_key").write_text("sk-from-file\n")
    assert ServiceSettings.from_env({}, home=tmp_path).api_key.reveal() == "sk-from-file"


def test_sdk_2_variables_with_the_sdks_precedence(tmp_path: Path) -> None:
    def url(**env: str) -> str:
        return ServiceSettings.from_env({"DASHSCOPE_API_KEY": "sk-1", **env}, home=tmp_path).base_url

    # DASHSCOPE_BASE_URL (2.x) is read before DASHSCOPE_HTTP_BASE_URL (1.x, 2.x's fallback); empty is unset
    assert url(DASHSCOPE_BASE_URL="http://a.test/api/v1", DASHSCOPE_HTTP_BASE_URL="http://b.test/api/v1") == (
        "http://a.test/api/v1")
    assert url(DASHSCOPE_BASE_URL="", DASHSCOPE_HTTP_BASE_URL="http://b.test/api/v1") == "http://b.test/api/v1"
    # DASHSCOPE_REGION: the workspace host of the region with a workspace, else the region's shared host
    assert url(DASHSCOPE_REGION="ap-southeast-1") == INTERNATIONAL_BASE_URL
    assert url(DASHSCOPE_REGION="cn-beijing") == BEIJING_BASE_URL
    assert url(DASHSCOPE_REGION="cn-hongkong") == "https://cn-hongkong.dashscope.aliyuncs.com/api/v1"
    assert url(DASHSCOPE_REGION="eu-central-1", DASHSCOPE_WORKSPACE="llm-ws1") == (
        "https://llm-ws1.eu-central-1.maas.aliyuncs.com/api/v1")
    assert url(DASHSCOPE_REGION="us-east-1", DASHSCOPE_API_REGION="ap-northeast-1", DASHSCOPE_WORKSPACE_ID="w2") == (
        "https://w2.us-east-1.maas.aliyuncs.com/api/v1")
    assert url(DASHSCOPE_REGION="ap-southeast-1", DASHSCOPE_BASE_URL="http://c.test/api/v1") == "http://c.test/api/v1"
    with pytest.raises(ConfigError, match="DASHSCOPE_REGION"):
        url(DASHSCOPE_REGION="mars-north-1")
    # DASHSCOPE_TIMEOUT / DASHSCOPE_MAX_RETRIES: unset means the `enroll:` values
    s = ServiceSettings.from_env({"DASHSCOPE_API_KEY": "sk-1"}, home=tmp_path)
    assert (s.timeout_s, s.max_retries) == (None, None)
    s = ServiceSettings.from_env({"DASHSCOPE_API_KEY": "sk-1", "DASHSCOPE_TIMEOUT": "12.5",
                                  "DASHSCOPE_MAX_RETRIES": "0"}, home=tmp_path)
    assert (s.timeout_s, s.max_retries) == (12.5, 0)
    for name, bad in [("DASHSCOPE_TIMEOUT", "soon"), ("DASHSCOPE_TIMEOUT", "0"), ("DASHSCOPE_TIMEOUT", "nan"),
                      ("DASHSCOPE_TIMEOUT", "inf"), ("DASHSCOPE_MAX_RETRIES", "-1"), ("DASHSCOPE_MAX_RETRIES", "2.5"),
                      ("DASHSCOPE_MAX_RETRIES", "9" * 5000)]:
        with pytest.raises(ConfigError, match=name) as info:
            ServiceSettings.from_env({"DASHSCOPE_API_KEY": "sk-1", name: bad}, home=tmp_path)
        assert len(str(info.value)) < 200


def test_timeout_and_retries_from_the_environment_reach_the_client(tmp_path: Path) -> None:
    from pipeline.service.enroll import make_client
    from pipeline.service.settings import EnrollSettings

    settings = EnrollSettings(request_timeout_s=60.0, max_retries=3)
    env = {"DASHSCOPE_API_KEY": "sk-1", "DASHSCOPE_TIMEOUT": "7", "DASHSCOPE_MAX_RETRIES": "1"}
    with make_client(settings, ServiceSettings.from_env(env, home=tmp_path)) as c:
        assert (c.timeout_s, c.max_retries, c._http.timeout.read) == (7.0, 1, 7.0)
    with make_client(settings, ServiceSettings.from_env({"DASHSCOPE_API_KEY": "sk-1"}, home=tmp_path)) as c:
        assert (c.timeout_s, c.max_retries) == (60.0, 3)
    fake = FakeService(script={"list_voice": [error(503, "ServiceUnavailable", "busy")] * 5})
    with EnrollmentClient(ServiceSettings.from_env(env, home=tmp_path), transport=fake.transport(),
                          sleep=lambda s: None) as c, pytest.raises(ServiceError):
        c.list_voices()
    assert len(fake.requests) == 2  # one retry, as DASHSCOPE_MAX_RETRIES says


def test_missing_key_and_bad_urls_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DASHSCOPE_API_KEY"):
        ServiceSettings.from_env({}, home=tmp_path)
    with pytest.raises(ConfigError, match="http"):
        ServiceSettings.from_env({"DASHSCOPE_API_KEY": "k", "DASHSCOPE_HTTP_BASE_URL": "dashscope.aliyuncs.com"},
                                 home=tmp_path)
    with pytest.raises(ConfigError, match="WORKSPACE_ID"):
        ServiceSettings.from_env({"DASHSCOPE_API_KEY": "k", "DASHSCOPE_API_REGION": "us-east-1"}, home=tmp_path)


def test_the_key_never_shows(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    echo = error(401, "InvalidApiKey", f"Invalid API-key provided: {KEY}")
    fake = FakeService(script={"list_voice": [echo], "query_voice": [httpx.ConnectError(f"boom {KEY}")] * 10})
    client, _ = make(fake)
    settings = client.settings
    texts = [repr(settings), str(settings), repr(settings.api_key), str(settings.api_key), repr(client)]
    with pytest.raises(ServiceError) as a:
        client.list_voices()
    with pytest.raises(ServiceError) as b:
        client.query_voice("x")
    for exc in (a.value, b.value):
        texts += [str(exc), repr(exc), exc.line(), exc.message, str(exc.as_dict()), str(pickle.loads(pickle.dumps(exc)))]
    texts += [r.getMessage() for r in caplog.records]
    assert all(KEY not in t for t in texts), [t for t in texts if KEY in t]
    assert "***" in a.value.message
    with pytest.raises(TypeError):
        pickle.dumps(settings.api_key)


ODD_KEY = "sk-SECRET+/=~0123456789abcdef"  # percent-encoding changes it: URLs carry another form


def test_a_server_echoing_the_key_never_gets_it_into_results_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake = EchoingService(key=ODD_KEY)
    fake.script["delete_voice"] = [httpx.Response(502, text="<html>Bad Gateway</html>")] * 10
    fake.script["update_voice"] = [httpx.Response(200, text="not json")]
    clock = FakeClock()
    client = EnrollmentClient(ServiceSettings(ApiKey(ODD_KEY), BASE), transport=fake.transport(), sleep=clock.sleep,
                              clock=clock, rng=lambda: 0.5, max_retries=1)
    seen: list[Any] = []
    url = client.upload_temporary(b"RIFF....WAVE", "take.wav")
    vid = client.create_voice("cosyvoice-v2", "demo", url)
    seen += [url, vid, client.last_request_id, client.list_voices(prefix="demo"), client.query_voice(vid),
             list(client.iter_voices()), client.get_upload_policy(), client.wait_until_ready(vid)]
    errors = []
    for call in (lambda: client.query_voice("cosyvoice-v2-demo-missing"), lambda: client.delete_voice(vid),
                 lambda: client.update_voice(vid, url)):
        with pytest.raises(ServiceError) as info:
            call()
        errors.append(info.value)
    for exc in errors:
        seen += [str(exc), repr(exc), exc.line(), exc.as_dict(), exc.request_id, pickle.loads(pickle.dumps(exc)).line()]
    seen += [r.getMessage() for r in caplog.records]
    text = json.dumps(seen, default=str)
    assert "SECRET" not in text
    assert "***" in errors[0].message and errors[0].request_id == "Bearer ***"
    assert [e.code for e in errors] == ["BadRequest.ResourceNotExist", "Unknown", "Unknown"]
    assert any("seen Bearer ***" in r.getMessage() for r in caplog.records if r.name == "httpx")
    client.close()


@pytest.mark.parametrize(("key", "what"), [
    ("sk-SECRET\nPART2", "a line break"), ("sk-SECRET PART2", "whitespace"), ("sk-SECRET\x1bPART2", "a control"),
    ("sk-SECRET\u00e9PART2", "non-ASCII"), ("sk-SECRET\tPART2", "whitespace"), (" sk-SECRETPART2", "whitespace"),
])
def test_a_malformed_key_is_refused_up_front_without_echoing_it(key: str, what: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        ServiceSettings.from_env({"DASHSCOPE_API_KEY": key}, home=tmp_path)
    msg = str(info.value)
    assert "DASHSCOPE_API_KEY" in msg and what in msg and len(msg.splitlines()) == 1
    assert "SECRET" not in msg and "PART2" not in msg
    with pytest.raises(ConfigError):
        ApiKey(key)
    key_file = tmp_path / "key.txt"
    key_file.write_text(key + "\n")
    if key.strip() == key:
        with pytest.raises(ConfigError, match="DASHSCOPE_API_KEY_FILE_PATH") as info:
            ServiceSettings.from_env({"DASHSCOPE_API_KEY_FILE_PATH": str(key_file)}, home=tmp_path)
        assert "SECRET" not in str(info.value)


def test_the_key_from_a_file_loses_its_line_break(tmp_path: Path) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text("sk-fromfile\n")
    s = ServiceSettings.from_env({"DASHSCOPE_API_KEY_FILE_PATH": str(key_file)}, home=tmp_path)
    assert s.api_key.reveal() == "sk-fromfile"


def test_service_error_pickles_with_its_facts() -> None:
    exc = ServiceError("Audio.AudioSilentError", "silent audio error!", http_status=400, request_id="r",
                       action="create_voice")
    back = pickle.loads(pickle.dumps(exc))
    assert (back.code, back.status, back.request_id, back.action, back.hint) == (
        exc.code, 400, "r", "create_voice", exc.hint)


def test_iter_voices_copes_with_a_capped_page_size() -> None:
    fake = FakeService()
    ids = [fake.add_voice("demo", f"https://e/{i}.wav") for i in range(45)]
    real = fake._list_voice

    def capped(req: httpx.Request) -> httpx.Response:  # a server that serves at most 10 per page
        import json as _json

        body = _json.loads(req.content)
        body["input"]["page_size"] = min(body["input"]["page_size"], 10)
        return real(httpx.Request("POST", req.url, content=_json.dumps(body).encode()))

    fake._list_voice = capped  # type: ignore[method-assign]
    client, _ = make(fake)
    assert [v["voice_id"] for v in client.iter_voices(page_size=100)] == ids
