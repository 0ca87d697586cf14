"""The local emulator driven with raw httpx: actions, error shapes, auth, quota, rate limit, faults, uploads."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from pipeline.cli import build_parser, main
from pipeline.emulator.cli import load_judge
from pipeline.emulator.clock import ManualClock
from pipeline.emulator.faults import Faults
from pipeline.emulator.fetch import LoopbackResolver, is_loopback_host
from pipeline.emulator.protocol import CUSTOMIZATION_PATH, Refusal, status_for
from pipeline.emulator.server import start_in_thread
from pipeline.emulator.settings import Settings
from pipeline.errors import ConfigError
from pipeline.service.synth import SynthesisError, model_for_voice, synthesize

FAKE = "https://voices.example/"  # URLs matching the "OK" fault rule are accepted without a fetch
ACCEPT_FAKE = {"urls": [{"pattern": r"^https://voices\.example/", "code": "OK"}]}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class Api:
    """A tiny raw client: posts bodies exactly as the SDK does."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.url = handle.base_http_url + "/services/audio/tts/customization"
        self.headers = {"Authorization": f"Bearer {handle.api_key}"}
        self.client = httpx.Client(timeout=60)

    def post(self, inp: dict[str, Any], headers: dict[str, str] | None = None, model: str = "voice-enrollment") -> httpx.Response:
        body = {"model": model, "parameters": {}, "input": inp}
        return self.client.post(self.url, json=body, headers=headers or self.headers)

    def create(self, url: str, prefix: str = "demo", target: str = "cosyvoice-v2", **kw: Any) -> httpx.Response:
        return self.post({"action": "create_voice", "target_model": target, "prefix": prefix, "url": url}, **kw)

    def query(self, voice_id: str) -> httpx.Response:
        return self.post({"action": "query_voice", "voice_id": voice_id})

    def status(self, voice_id: str) -> str:
        return str(assert_ok(self.query(voice_id))["status"])

    def wait(self, voice_id: str) -> str:
        """The voice's status once its review is over: DEPLOYING until the emulator's clock has moved
        by the whole deploy delay, settled from then on."""
        delay = self.handle.emulator.settings.deploy_delay_s
        assert self.status(voice_id) == "DEPLOYING"
        self.handle.clock.advance(delay * 0.99)
        assert self.status(voice_id) == "DEPLOYING"
        self.handle.clock.advance(delay * 0.01)
        status = self.status(voice_id)
        assert status != "DEPLOYING"
        return status


def assert_error(r: httpx.Response, status: int, code: str, message: str | None = None) -> None:
    body = r.json()
    assert r.status_code == status, body
    assert set(body) == {"request_id", "code", "message"}
    assert body["code"] == code
    assert UUID.match(body["request_id"])
    assert r.headers["x-request-id"] == body["request_id"]
    if message is not None:
        assert body["message"] == message


def assert_ok(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert r.status_code == 200, body
    assert set(body) == {"output", "usage", "request_id"}
    assert body["usage"] == {"count": 1}
    assert r.headers["x-request-id"] == body["request_id"]
    assert r.headers["content-type"].startswith("application/json")
    return dict(body["output"])


@pytest.fixture
def api(emulator: Any) -> Iterator[Api]:
    client = Api(emulator)
    yield client
    client.client.close()


# --- the five actions --------------------------------------------------------------------------


def test_create_judges_real_speech_then_deploys(api: Api, file_server: Any) -> None:
    out = assert_ok(api.create(file_server.url("speech_librivox_16k.wav")))
    assert set(out) == {"voice_id"}
    assert re.fullmatch(r"cosyvoice-v2-demo-[0-9a-f]{32}", out["voice_id"])
    assert api.wait(out["voice_id"]) == "OK"
    q = assert_ok(api.query(out["voice_id"]))
    assert set(q) == {"gmt_create", "resource_link", "target_model", "gmt_modified", "status"}
    assert q["resource_link"] == file_server.url("speech_librivox_16k.wav")
    assert q["target_model"] == "cosyvoice-v2"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", q["gmt_create"])


def test_deploying_lasts_the_configured_delay(api: Api, emulator: Any) -> None:
    emulator.configure(deploy_delay_s=3600.0, faults=ACCEPT_FAKE)
    vid = assert_ok(api.create(FAKE + "a.wav"))["voice_id"]
    created = assert_ok(api.query(vid))
    assert created["status"] == "DEPLOYING" and created["gmt_modified"] == created["gmt_create"]
    emulator.configure(deploy_delay_s=0.0)
    vid2 = assert_ok(api.create(FAKE + "b.wav"))["voice_id"]
    assert api.status(vid2) == "OK"
    emulator.clock.advance(3599.0)
    assert api.status(vid) == "DEPLOYING"
    emulator.clock.advance(1.0)
    done = assert_ok(api.query(vid))
    assert done["status"] == "OK" and done["gmt_create"] == created["gmt_create"]
    assert done["gmt_modified"] == time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(emulator.clock.time()))


def test_list_pages_and_prefix(api: Api, emulator: Any) -> None:
    emulator.configure(faults=ACCEPT_FAKE)
    ids = {assert_ok(api.create(FAKE + f"{i}.wav", prefix="aaa"))["voice_id"] for i in range(5)}
    other = assert_ok(api.create(FAKE + "x.wav", prefix="bbb", target="cosyvoice-v3-plus"))["voice_id"]
    pages = [
        assert_ok(api.post({"action": "list_voice", "prefix": "aaa", "page_index": i, "page_size": 2}))["voice_list"]
        for i in range(4)
    ]
    assert [len(p) for p in pages] == [2, 2, 1, 0]
    seen = [v["voice_id"] for p in pages for v in p]
    assert set(seen) == ids and len(seen) == 5
    assert set(pages[0][0]) == {"voice_id", "gmt_create", "gmt_modified", "status"}
    everything = assert_ok(api.post({"action": "list_voice", "page_index": 0, "page_size": 10}))["voice_list"]
    assert {v["voice_id"] for v in everything} == ids | {other}
    default = assert_ok(api.post({"action": "list_voice"}))["voice_list"]  # defaults: page 0, size 10
    assert len(default) == 6
    assert_error(api.post({"action": "list_voice", "page_size": 0}), 400, "InvalidParameter")


def test_update_redeploys_with_the_new_url(api: Api, emulator: Any, file_server: Any) -> None:
    vid = assert_ok(api.create(file_server.url("speech_librivox_16k.wav")))["voice_id"]
    assert api.wait(vid) == "OK"
    emulator.configure(deploy_delay_s=3600.0, faults=ACCEPT_FAKE)
    assert assert_ok(api.post({"action": "update_voice", "voice_id": vid, "url": FAKE + "new.wav"})) == {}
    q = assert_ok(api.query(vid))
    assert q["status"] == "DEPLOYING"
    assert q["resource_link"] == FAKE + "new.wav"
    assert q["target_model"] == "cosyvoice-v2"
    silent = file_server.url("speech_arctic_awb_16k.wav")
    assert_error(api.post({"action": "update_voice", "voice_id": vid, "url": silent}), 400, "Audio.AudioSilentError")


def test_delete_and_missing_voice(api: Api, emulator: Any) -> None:
    emulator.configure(faults=ACCEPT_FAKE)
    vid = assert_ok(api.create(FAKE + "a.wav"))["voice_id"]
    assert assert_ok(api.post({"action": "delete_voice", "voice_id": vid})) == {}
    missing = "The Required resource not exist."
    assert_error(api.query(vid), 400, "BadRequest.ResourceNotExist", missing)
    assert_error(api.post({"action": "delete_voice", "voice_id": vid}), 400, "BadRequest.ResourceNotExist", missing)
    assert_error(
        api.post({"action": "update_voice", "voice_id": vid, "url": FAKE + "b.wav"}), 400, "BadRequest.ResourceNotExist"
    )
    assert_error(api.post({"action": "query_voice"}), 400, "InvalidParameter")


def test_v2_body_without_parameters_and_action_last(api: Api, emulator: Any) -> None:
    emulator.configure(faults=ACCEPT_FAKE)
    raw = '{"model":"voice-enrollment","input":{"target_model":"cosyvoice-v3-flash","prefix":"demo","url":"https://voices.example/a.wav","action":"create_voice"}}'
    r = httpx.post(api.url, content=raw, headers={**api.headers, "Content-Type": "application/json"})
    assert assert_ok(r)["voice_id"].startswith("cosyvoice-v3-flash-demo-")


# --- request errors ----------------------------------------------------------------------------


def test_malformed_requests(api: Api) -> None:
    r = httpx.post(api.url, content=b"not json", headers=api.headers)
    assert_error(r, 400, "BadRequest.IllegalInput", "The input parameter requires json format.")
    r = httpx.post(api.url, json={"input": {"action": "list_voice"}}, headers=api.headers)
    assert_error(r, 400, "BadRequest.EmptyModel")
    r = httpx.post(api.url, json={"model": "voice-enrollment"}, headers=api.headers)
    assert_error(r, 400, "BadRequest.EmptyInput", "Required input parameter missing from request.")
    assert_error(api.post({"action": "list_voice"}, model="cosyvoice-v2"), 400, "InvalidParameter")
    assert_error(api.post({"action": "list_voices"}), 400, "InvalidParameter")  # the plural is refused


def test_create_field_rules(api: Api) -> None:
    assert_error(api.create(FAKE, prefix="abcdefghijk"), 400, "InvalidParameter", "prefix should not be longer than 10 characters")
    assert_error(api.create(FAKE, prefix="Demo_1"), 400, "InvalidParameter")
    assert_error(api.create(FAKE, prefix=""), 400, "InvalidParameter")
    assert_error(api.create(FAKE, target="cosyvoice-v9"), 400, "InvalidParameter")
    assert_error(api.create("ftp://127.0.0.1/a.wav"), 400, "InvalidParameter")
    assert_error(api.post({"action": "create_voice", "target_model": "cosyvoice-v2", "prefix": "demo"}), 400, "InvalidParameter")


def test_lenient_prefix_setting(api: Api, emulator: Any) -> None:
    emulator.configure(strict_prefix=False, faults=ACCEPT_FAKE)
    assert assert_ok(api.create(FAKE + "a.wav", prefix="Demo_1"))["voice_id"].startswith("cosyvoice-v2-Demo_1-")


def test_auth(api: Api, emulator: Any) -> None:
    for headers in ({}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": emulator.api_key}):
        r = httpx.post(api.url, json={"model": "voice-enrollment", "input": {"action": "list_voice"}}, headers=headers)
        assert_error(r, 401, "InvalidApiKey", "Invalid API-key provided.")
        assert emulator.api_key not in r.text
    lower = {"Authorization": f"bearer {emulator.api_key}"}
    assert_ok(api.post({"action": "list_voice"}, headers=lower))
    r = httpx.get(emulator.base_http_url + "/uploads", params={"action": "getPolicy", "model": "voice-enrollment"})
    assert_error(r, 401, "InvalidApiKey")


def test_settings_repr_hides_keys(tmp_path: Path) -> None:
    assert "sk-" not in repr(Settings(api_keys=("sk-secret",)))
    with start_in_thread(tmp_path, api_keys=["sk-one", "sk-two"]) as h:
        assert "sk-one" not in repr(h)
        r = httpx.post(h.base_http_url + "/services/audio/tts/customization",
                       json={"model": "voice-enrollment", "input": {"action": "list_voice"}},
                       headers={"Authorization": "Bearer sk-two"})
        assert_ok(r)


# --- quota and rate limit ----------------------------------------------------------------------


def test_quota(api: Api, emulator: Any) -> None:
    emulator.configure(quota=2, faults=ACCEPT_FAKE)
    first = assert_ok(api.create(FAKE + "1.wav"))["voice_id"]
    assert_ok(api.create(FAKE + "2.wav"))
    r = api.create(FAKE + "3.wav")
    assert_error(r, 400, "Throttling.AllocationQuota")
    assert "2" in r.json()["message"]
    assert_ok(api.post({"action": "delete_voice", "voice_id": first}))
    assert_ok(api.create(FAKE + "3.wav"))


def test_default_quota_is_1000() -> None:
    assert Settings().quota == 1000
    args = build_parser().parse_args(["emulator"])
    assert args.quota == 1000
    assert args.host == "127.0.0.1"


def test_rate_limit_answers_429(api: Api, emulator: Any) -> None:
    emulator.configure(rate_limit_rps=2.0, rate_limit_burst=3)
    for _ in range(3):
        assert_ok(api.post({"action": "list_voice"}))
    assert_error(api.post({"action": "list_voice"}), 429, "Throttling.RateQuota",
                 "Requests rate limit exceeded, please try again later.")
    emulator.clock.advance(0.25)  # half of the half second one token takes at 2 per second
    assert api.post({"action": "list_voice"}).status_code == 429
    emulator.clock.advance(0.25)
    assert_ok(api.post({"action": "list_voice"}))
    assert api.post({"action": "list_voice"}).status_code == 429
    emulator.clock.advance(10.0)  # refills up to the burst, no further
    for _ in range(3):
        assert_ok(api.post({"action": "list_voice"}))
    assert api.post({"action": "list_voice"}).status_code == 429
    emulator.configure(rate_limit_rps=None)
    assert_ok(api.post({"action": "list_voice"}))


# --- fault injection ---------------------------------------------------------------------------


def test_fault_error_rate_per_action(api: Api, emulator: Any) -> None:
    emulator.configure(faults={"actions": {"list_voice": {"error_rate": 1.0}}})
    assert_error(api.post({"action": "list_voice"}), 500, "InternalError")
    assert_error(api.query("nope"), 400, "BadRequest.ResourceNotExist")  # other actions unaffected
    emulator.configure(faults={"actions": {"query_voice": {"error_rate": 1.0, "code": "Throttling", "latency_s": 0.01}}})
    assert_error(api.query("nope"), 429, "Throttling")
    emulator.configure(faults={"actions": {"create_voice": {"error_rate": 1.0, "message": "request asr failed"}}})
    assert_error(api.create(FAKE), 500, "InternalError", "request asr failed")


def test_fault_dice_are_seeded(api: Api, emulator: Any) -> None:
    faults = {"seed": 7, "actions": {"list_voice": {"error_rate": 0.5}}}

    def run() -> list[int]:
        emulator.configure(faults=faults)
        return [api.post({"action": "list_voice"}).status_code for _ in range(12)]

    first = run()
    assert set(first) == {200, 500}
    assert run() == first


def test_fault_dropped_connection(api: Api, emulator: Any) -> None:
    emulator.configure(faults={"actions": {"list_voice": {"drop_rate": 1.0}}})
    with pytest.raises(httpx.TransportError):
        api.post({"action": "list_voice"})
    emulator.configure(faults={})
    assert_ok(api.post({"action": "list_voice"}))


def test_fault_by_url_pattern(api: Api, emulator: Any, file_server: Any) -> None:
    emulator.configure(faults={"urls": [
        {"pattern": "asr", "code": "InternalError", "message": "request asr failed"},
        {"pattern": "short", "code": "Audio.AudioShortError"},
        {"pattern": "later", "code": "UNDEPLOYED"},
    ]})
    assert_error(api.create("https://x.example/asr.wav"), 500, "InternalError", "request asr failed")
    assert_error(api.create("https://x.example/short.wav"), 400, "Audio.AudioShortError", "valid audio too short!")
    vid = assert_ok(api.create("https://x.example/later.wav"))["voice_id"]
    assert api.wait(vid) == "UNDEPLOYED"


def test_fault_undeploy_rate(api: Api, emulator: Any, file_server: Any) -> None:
    emulator.configure(faults={"actions": {"create_voice": {"undeploy_rate": 1.0}}})
    vid = assert_ok(api.create(file_server.url("speech_librivox_16k.wav")))["voice_id"]
    assert api.wait(vid) == "UNDEPLOYED"


def test_faults_file_is_strict(tmp_path: Path) -> None:
    good = tmp_path / "faults.yaml"
    good.write_text("seed: 1\nlatency_s: 0.1\nactions:\n  create_voice: {error_rate: 0.2, code: InternalError}\n"
                    "urls:\n  - {pattern: 'silent', code: Audio.AudioSilentError}\n")
    f = Faults.load(good)
    assert f.for_scope("create_voice").error_rate == 0.2
    assert f.urls[0].code == "Audio.AudioSilentError"
    bads: list[dict[str, Any]] = [{"nope": 1}, {"actions": {"create_voices": {}}}, {"actions": {"create_voice": {"rate": 1}}},
                {"urls": [{"pattern": "("}]}, {"urls": [{"pattern": "(", "code": "X"}]}]
    for bad in bads:
        with pytest.raises(ConfigError):
            Faults.from_mapping(bad)


# --- judging the audio -------------------------------------------------------------------------


def test_judging_answers_the_service_codes(api: Api, file_server: Any) -> None:
    assert_error(api.create(file_server.url("speech_arctic_awb_16k.wav")), 400, "Audio.AudioSilentError", "silent audio error!")
    assert_error(api.create(file_server.url("noise_room_ami_16k.flac")), 400, "BadRequest.UnsupportedFileFormat")
    assert_error(api.create(file_server.url("speech_chan3_11k.wav")), 400, "Audio.AudioRateError")
    assert_error(api.create(file_server.add("notes.wav", b"these are not audio bytes" * 100)), 400, "Audio.DecoderError")


def test_silent_room_noise_as_wav(api: Api, file_server: Any, tmp_path: Path) -> None:
    x, sr = sf.read(file_server.dir / "noise_room_ami_16k.flac", dtype="float32")
    wav = tmp_path / "room.wav"
    sf.write(wav, x, sr, subtype="PCM_16")
    r = api.create(file_server.add("room_noise.wav", wav.read_bytes()))
    assert_error(r, 400, "Audio.AudioSilentError")


def test_undeploy_codes_turn_refusals_into_undeployed(api: Api, emulator: Any, file_server: Any) -> None:
    emulator.configure(undeploy_codes=frozenset({"Audio.AudioSilentError"}))
    vid = assert_ok(api.create(file_server.url("speech_arctic_awb_16k.wav")))["voice_id"]
    assert api.wait(vid) == "UNDEPLOYED"


_LOOPBACK4 = ipaddress.ip_network("127.0.0.0/8")
# Addresses at the edges of the loopback block (one below, one above), the unspecified
# addresses and the IPv6 address next to ::1: off-by-one mistakes in the guard would show here.
OUTSIDE_LOOPBACK = (
    str(_LOOPBACK4.network_address - 1),
    str(_LOOPBACK4.broadcast_address + 1),
    str(ipaddress.IPv6Address(2)),
    str(ipaddress.IPv4Address(0)),
    str(ipaddress.IPv6Address(0)),
)


def test_fetch_is_loopback_only(api: Api, emulator: Any, file_server: Any) -> None:
    calls: list[str] = []
    fetcher = emulator.emulator.fetcher
    real_get = fetcher.get

    async def spy(url: str, target: Path, limit: int, timeout_s: float) -> tuple[int, str | None]:
        calls.append(url)
        return await real_get(url, target, limit, timeout_s)

    fetcher.get = spy
    # Names under .invalid (RFC 6761) can never resolve, and the IP hosts sit just outside the
    # loopback block, so even a broken guard would send nothing anywhere.
    for url in ("http://voices.invalid/a.wav", f"https://{OUTSIDE_LOOPBACK[0]}/a.wav",
                f"http://{OUTSIDE_LOOPBACK[1]}:8080/a.wav", f"http://[{OUTSIDE_LOOPBACK[2]}]/a.wav",
                "http://localhost.evil.invalid/a.wav"):
        assert_error(api.create(url), 400, "BadRequest.InputDownloadFailed")
    assert calls == []
    localhost = file_server.url("speech_librivox_16k.wav").replace("127.0.0.1", "localhost")
    assert_ok(api.create(localhost))
    assert_error(api.create(file_server.url("missing.wav")), 400, "BadRequest.InputDownloadFailed")
    assert len(calls) == 2


def test_redirect_off_loopback_is_refused(api: Api) -> None:
    import http.server
    import threading

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "http://voices.invalid/a.wav")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        assert_error(api.create(f"http://127.0.0.1:{srv.server_address[1]}/a.wav"), 400, "BadRequest.InputDownloadFailed")
    finally:
        srv.shutdown()
        srv.server_close()


def test_loopback_rules() -> None:
    for host in ("127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback_host(host)
    for host in ("voices.invalid", "localhost.invalid", *OUTSIDE_LOOPBACK):
        assert not is_loopback_host(host)
    resolver = LoopbackResolver()
    assert asyncio.run(resolver.resolve("localhost", 80))[0]["host"] == "127.0.0.1"
    with pytest.raises(OSError):
        asyncio.run(resolver.resolve("voices.invalid", 80))


def test_status_for_codes() -> None:
    assert status_for("Audio.AudioSilentError") == 400
    assert status_for("BadRequest.UnsupportedFileFormat") == 400
    assert status_for("InternalError") == 500
    assert status_for("Throttling.RateQuota") == 429
    assert status_for("Throttling.AllocationQuota") == 400
    assert status_for("InvalidApiKey") == 401
    assert Refusal("InternalError").message == "audio preprocess server error"


# --- temporary uploads and oss:// --------------------------------------------------------------


def get_policy(h: Any, model: str = "voice-enrollment") -> dict[str, Any]:
    r = httpx.get(h.base_http_url + "/uploads", params={"action": "getPolicy", "model": model},
                  headers={"Authorization": f"Bearer {h.api_key}"})
    body = r.json()
    assert r.status_code == 200, body
    assert set(body) == {"request_id", "data"}
    assert r.headers["x-request-id"] == body["request_id"]
    return dict(body["data"])


def upload(policy: dict[str, Any], name: str, data: bytes, **override: str) -> tuple[httpx.Response, str]:
    key = policy["upload_dir"] + "/" + name
    form = {
        "OSSAccessKeyId": policy["oss_access_key_id"], "Signature": policy["signature"], "policy": policy["policy"],
        "key": key, "x-oss-object-acl": policy["x_oss_object_acl"],
        "x-oss-forbid-overwrite": policy["x_oss_forbid_overwrite"], "success_action_status": "200",
        "x-oss-content-type": "audio/x-wav", **override,
    }
    r = httpx.post(policy["upload_host"], data=form, files={"file": (name, data, "application/octet-stream")})
    return r, "oss://" + key


def test_get_policy_shape(emulator: Any) -> None:
    data = get_policy(emulator)
    assert set(data) == {"policy", "signature", "upload_dir", "upload_host", "expire_in_seconds", "max_file_size_mb",
                         "capacity_limit_mb", "oss_access_key_id", "x_oss_object_acl", "x_oss_forbid_overwrite"}
    assert data["upload_dir"].startswith("dashscope-instant/")
    assert data["upload_host"].startswith(f"http://127.0.0.1:{emulator.port}/")
    assert data["expire_in_seconds"] == 300
    assert json.loads(base64.b64decode(data["policy"]))["x-model"] == "voice-enrollment"
    r = httpx.get(emulator.base_http_url + "/uploads", params={"action": "getPolicy"},
                  headers={"Authorization": f"Bearer {emulator.api_key}"})
    assert_error(r, 400, "InvalidParameter")


def test_oss_url_needs_the_header_and_the_policy_model(api: Api, emulator: Any) -> None:
    wav = (Path(__file__).parent.parent / "fixtures" / "speech_librivox_16k.wav").read_bytes()
    r, oss = upload(get_policy(emulator), "sample.wav", wav)
    assert r.status_code == 200
    assert_error(api.create(oss), 400, "BadRequest.InputDownloadFailed")
    resolve = {**api.headers, "X-DashScope-OssResourceResolve": "enable"}
    vid = assert_ok(api.create(oss, headers=resolve))["voice_id"]
    assert api.wait(vid) == "OK"
    assert assert_ok(api.query(vid))["resource_link"] == oss
    r, other = upload(get_policy(emulator, model="qwen-vl-plus"), "sample.wav", wav)
    assert r.status_code == 200
    assert_error(api.create(other, headers=resolve), 400, "BadRequest.InputDownloadFailed")
    assert_error(api.create(oss + "x", headers=resolve), 400, "BadRequest.InputDownloadFailed")


def test_upload_policy_rules(emulator: Any) -> None:
    policy = get_policy(emulator)
    r, _ = upload(policy, "a.wav", b"RIFF")
    assert r.status_code == 200
    r, _ = upload(policy, "a.wav", b"RIFF")
    assert r.status_code == 409 and "<Code>FileAlreadyExists</Code>" in r.text
    r, _ = upload(policy, "b.wav", b"RIFF", Signature="forged")
    assert r.status_code == 403 and "SignatureDoesNotMatch" in r.text
    r, _ = upload(policy, "b.wav", b"RIFF", key="dashscope-instant/elsewhere/b.wav")
    assert r.status_code == 403 and "AccessDenied" in r.text
    emulator.clock.advance(299.0)  # the policy holds for expire_in_seconds (300), not a second more
    r, _ = upload(policy, "c.wav", b"RIFF")
    assert r.status_code == 200
    emulator.clock.advance(1.0)
    r, _ = upload(policy, "d.wav", b"RIFF")
    assert r.status_code == 403 and "Policy expired" in r.text
    r, _ = upload(get_policy(emulator), "d.wav", b"RIFF")
    assert r.status_code == 200


def test_upload_expires_after_ttl(api: Api, emulator: Any) -> None:
    wav = (Path(__file__).parent.parent / "fixtures" / "speech_librivox_16k.wav").read_bytes()
    r, oss = upload(get_policy(emulator), "sample.wav", wav)
    assert r.status_code == 200
    resolve = {**api.headers, "X-DashScope-OssResourceResolve": "enable"}
    ttl_s = emulator.emulator.settings.upload_ttl_s
    emulator.clock.advance(ttl_s - 1.0)
    assert_ok(api.create(oss, headers=resolve))
    emulator.clock.advance(1.0)
    assert_error(api.create(oss, headers=resolve), 400, "BadRequest.InputDownloadFailed")


# --- persistence -------------------------------------------------------------------------------


def test_state_survives_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "state"
    clock = ManualClock()
    with start_in_thread(data, clock=clock, deploy_delay_s=5.0, faults=ACCEPT_FAKE) as h:
        api = Api(h)
        vid = assert_ok(api.create(FAKE + "a.wav"))["voice_id"]
        assert api.status(vid) == "DEPLOYING"
        policy = get_policy(h)
        r, oss = upload(policy, "kept.wav", (Path(__file__).parent.parent / "fixtures" / "speech_librivox_16k.wav").read_bytes())
        assert r.status_code == 200
    clock.advance(5.0)  # the review ends while the emulator is down
    with start_in_thread(data, clock=clock) as h2:
        api2 = Api(h2)
        assert assert_ok(api2.query(vid))["status"] == "OK"
        assert [v["voice_id"] for v in assert_ok(api2.post({"action": "list_voice"}))["voice_list"]] == [vid]
        resolve = {**api2.headers, "X-DashScope-OssResourceResolve": "enable"}
        assert_ok(api2.create(oss, headers=resolve))
        moved = {**policy, "upload_host": policy["upload_host"].replace(str(h.port), str(h2.port))}
        r, _ = upload(moved, "late.wav", b"RIFF")  # the signing secret persisted too
        assert r.status_code == 200


# --- synthesis over the WebSocket --------------------------------------------------------------


def enrolled(api: Api, emulator: Any, target: str = "cosyvoice-v2") -> str:
    emulator.configure(faults=ACCEPT_FAKE, deploy_delay_s=0.0)
    return str(assert_ok(api.create(FAKE + "a.wav", target=target))["voice_id"])


def test_synthesis_with_an_enrolled_voice(api: Api, emulator: Any) -> None:
    vid = enrolled(api, emulator)
    kw = {"voice": vid, "model": "cosyvoice-v2", "api_key": emulator.api_key, "url": emulator.base_ws_url}
    result = asyncio.run(synthesize("Hello there. How are you?", sample_rate=16000, **kw))
    assert len(result.pcm) > 16000  # > 0.5 s of 16-bit audio
    assert result.characters == len("Hello there. How are you?")
    assert result.events[0] == "task-started" and result.events[-1] == "task-finished"
    assert result.events.count("result-generated") == 6  # 2 sentences x begin/synthesis/end
    again = asyncio.run(synthesize("Hello there. How are you?", sample_rate=16000, **kw))
    assert again.pcm == result.pcm  # deterministic
    cjk = asyncio.run(synthesize("你好世界", sample_rate=16000, **kw))
    assert cjk.characters == 8


def test_synthesis_refusals(api: Api, emulator: Any) -> None:
    vid = enrolled(api, emulator, target="cosyvoice-v3-flash")
    kw = {"api_key": emulator.api_key, "url": emulator.base_ws_url}
    with pytest.raises(SynthesisError) as exc:
        asyncio.run(synthesize("hi.", voice=vid, model="cosyvoice-v2", **kw))
    assert exc.value.code == "InvalidParameter"
    with pytest.raises(SynthesisError) as exc:
        asyncio.run(synthesize("hi.", voice="cosyvoice-v2-ghost-" + "0" * 32, model="cosyvoice-v2", **kw))
    assert exc.value.code == "InternalError" and exc.value.message == "Remote cancelled grpc stream."
    with pytest.raises(SynthesisError) as exc:
        asyncio.run(synthesize("hi.", voice=vid, model="cosyvoice-v3-flash", api_key="sk-wrong", url=emulator.base_ws_url))
    assert exc.value.code == "InvalidApiKey"
    emulator.configure(deploy_delay_s=3600.0)
    pending = assert_ok(api.create(FAKE + "p.wav"))["voice_id"]
    with pytest.raises(SynthesisError, match="not ready"):
        asyncio.run(synthesize("hi.", voice=pending, model="cosyvoice-v2", **kw))
    emulator.configure(faults={"actions": {"synthesis": {"error_rate": 1.0}}})
    with pytest.raises(SynthesisError) as exc:
        asyncio.run(synthesize("hi.", voice=vid, model="cosyvoice-v3-flash", **kw))
    assert exc.value.code == "InternalError"


def test_synthesis_protocol_errors(emulator: Any) -> None:
    import aiohttp

    async def scenario() -> list[dict[str, Any]]:
        headers = {"Authorization": f"Bearer {emulator.api_key}"}
        async with aiohttp.ClientSession() as s, s.ws_connect(emulator.base_ws_url, headers=headers) as ws:
            await ws.send_str(json.dumps({"header": {"action": "continue-task", "task_id": "t1", "streaming": "duplex"},
                                          "payload": {"input": {"text": "hi"}}}))
            first = json.loads((await ws.receive()).data)
        async with aiohttp.ClientSession() as s, s.ws_connect(emulator.base_ws_url, headers=headers) as ws:
            await ws.send_str(json.dumps({"header": {"action": "run-task", "task_id": "t2", "streaming": "duplex"},
                                          "payload": {"model": "cosyvoice-v2", "parameters": {"voice": "longxiaochun"}}}))
            second = json.loads((await ws.receive()).data)
        return [first, second]

    first, second = asyncio.run(scenario())
    for event in (first, second):
        assert event["header"]["event"] == "task-failed"
        assert event["header"]["error_code"] == "InvalidParameter"
        assert event["header"]["error_message"] == "task can not be null"


def test_synthesis_cancel_and_flush(api: Api, emulator: Any) -> None:
    import aiohttp

    vid = enrolled(api, emulator)

    async def scenario() -> tuple[list[str], int]:
        headers = {"Authorization": f"Bearer {emulator.api_key}"}
        events: list[str] = []
        audio = 0

        def msg(action: str, inp: dict[str, Any]) -> str:
            payload: dict[str, Any] = {"model": "cosyvoice-v2", "input": inp}
            if action == "run-task":
                payload["parameters"] = {"voice": vid, "format": "wav", "sample_rate": 16000}
            return json.dumps({"header": {"action": action, "task_id": "t", "streaming": "duplex"}, "payload": payload})

        async with aiohttp.ClientSession() as s, s.ws_connect(emulator.base_ws_url, headers=headers) as ws:
            await ws.send_str(msg("run-task", {}))
            await ws.send_str(msg("continue-task", {"text": "no punctuation yet"}))
            await ws.send_str(msg("continue-task", {"flush": True}))
            await ws.send_str(msg("continue-task", {"text": "dropped on cancel"}))
            await ws.send_str(msg("finish-task", {"directive": "cancel"}))
            async for m in ws:
                if m.type == aiohttp.WSMsgType.BINARY:
                    audio += 1
                    assert m.data[:4] == b"RIFF" if audio == 1 else True
                    continue
                data = json.loads(m.data)
                events.append(data["payload"].get("output", {}).get("type") or data["header"]["event"])
                if data["header"]["event"] in ("task-finished", "task-failed"):
                    break
        return events, audio

    events, audio = asyncio.run(scenario())
    assert events == ["task-started", "sentence-begin", "sentence-synthesis", "sentence-end", "task-finished"]
    assert audio == 1


def test_synth_cli_writes_a_wav(api: Api, emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    vid = enrolled(api, emulator, target="cosyvoice-v3.5-plus")
    assert model_for_voice(vid) == "cosyvoice-v3.5-plus"
    monkeypatch.setenv("DASHSCOPE_API_KEY", emulator.api_key)
    monkeypatch.setenv("DASHSCOPE_WEBSOCKET_BASE_URL", emulator.base_ws_url)
    out = tmp_path / "out.wav"
    assert main(["synth", "--voice", vid, "Testing one two three.", "-o", str(out)]) == 0
    x, sr = sf.read(out, dtype="float32")
    assert sr == 24000 and x.ndim == 1 and x.size > sr // 2 and np.abs(x).max() > 0.05
    assert vid in capsys.readouterr().out
    assert main(["synth", "--voice", "cosyvoice-v2-ghost-" + "0" * 32, "hi", "-o", str(tmp_path / "x.wav")]) == 1
    assert "Remote cancelled grpc stream" in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists()
    assert main(["synth", "--voice", "longxiaochun", "hi", "-o", str(tmp_path / "y.wav")]) == 2
    monkeypatch.delenv("DASHSCOPE_API_KEY")
    assert main(["synth", "--voice", vid, "hi", "-o", str(tmp_path / "z.wav")]) == 2


# --- the CLI server ----------------------------------------------------------------------------


def test_emulator_command_serves_on_loopback(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))",
         "emulator", "--port", "0", "--data", str(tmp_path / "d")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        assert m, line
        r = httpx.post(m.group(1) + CUSTOMIZATION_PATH, json={"model": "voice-enrollment", "input": {"action": "list_voice"}},
                       headers={"Authorization": "Bearer sk-emulator"})
        assert r.status_code == 200 and r.json()["output"] == {"voice_list": []}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert (tmp_path / "d" / "emulator.sqlite3").exists()


JUDGE_MODULE = """
from types import SimpleNamespace

def refuse_all(path):
    return SimpleNamespace(ok=False, code="Audio.AudioSilentError", message="judged elsewhere", warnings=[])
"""


def test_python_m_emulator_with_a_judge_from_the_command_line(tmp_path: Path, file_server: Any) -> None:
    (tmp_path / "myjudge.py").write_text(JUDGE_MODULE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.emulator", "--port", "0", "--data", str(tmp_path / "d"),
         "--judge", "myjudge:refuse_all"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        assert m, line
        body = {"model": "voice-enrollment", "input": {"action": "create_voice", "target_model": "cosyvoice-v2",
                                                        "prefix": "demo", "url": file_server.url("speech_librivox_16k.wav")}}
        r = httpx.post(m.group(1) + CUSTOMIZATION_PATH, json=body, headers={"Authorization": "Bearer sk-emulator"})
        assert_error(r, 400, "Audio.AudioSilentError", "silent audio error!")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_judge_option_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert load_judge("os.path:exists") is os.path.exists
    for spec, says in (("exists", "MODULE:NAME"), ("no_such_module_xyz:f", "cannot import"),
                       ("os.path:nothing", "has no nothing"), ("os:sep", "not callable")):
        with pytest.raises(ConfigError, match=says):
            load_judge(spec)
    assert main(["emulator", "--judge", "os:sep", "--data", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("voiceprep: config error: --judge") and len(err.splitlines()) == 1
    assert not (tmp_path / "d").exists()


BLOCK_AIOHTTP = "import sys; sys.modules['aiohttp'] = None; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))"


def test_without_aiohttp_the_emulator_and_synth_name_the_extra(tmp_path: Path) -> None:
    env = {**os.environ, "DASHSCOPE_API_KEY": "sk-x"}
    r = subprocess.run([sys.executable, "-c", BLOCK_AIOHTTP, "emulator", "--data", str(tmp_path / "d")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == "voiceprep: the emulator needs the optional extra: pip install 'voiceprep[emulator]'\n"
    assert not (tmp_path / "d").exists()
    r = subprocess.run([sys.executable, "-c", BLOCK_AIOHTTP, "synth", "--voice", "cosyvoice-v2-demo-" + "0" * 32, "hi",
                        "-o", str(tmp_path / "x.wav")], capture_output=True, text=True, env=env, timeout=120)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == "voiceprep: synth needs aiohttp, in the optional extra: pip install 'voiceprep[emulator]'\n"


def test_run_and_check_need_no_aiohttp(tmp_path: Path) -> None:
    wav = Path(__file__).parent.parent / "fixtures" / "speech_librivox_16k.wav"
    r = subprocess.run([sys.executable, "-c", BLOCK_AIOHTTP, "run", str(wav), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    x, sr = sf.read(tmp_path / "out" / "speech_librivox_16k.wav", dtype="float32")
    assert sr >= 16000 and 10.0 < x.size / sr <= 20.0
    r = subprocess.run([sys.executable, "-c", BLOCK_AIOHTTP, "check", str(wav)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def test_synthesis_idle_timeout_and_dropped_connection(api: Api, emulator: Any) -> None:
    """The idle timeout runs on the emulator's clock from the client's last message: a client silent
    for a second less than it is still served, one silent for all of it gets its task failed."""
    import aiohttp

    vid = enrolled(api, emulator)
    idle_s = emulator.emulator.settings.idle_timeout_s
    headers = {"Authorization": f"Bearer {emulator.api_key}"}

    def msg(action: str, inp: dict[str, Any]) -> str:
        payload: dict[str, Any] = {"model": "cosyvoice-v2", "input": inp}
        if action == "run-task":
            payload["parameters"] = {"voice": vid, "format": "pcm", "sample_rate": 16000}
        return json.dumps({"header": {"action": action, "task_id": "t", "streaming": "duplex"}, "payload": payload})

    async def events_until(ws: aiohttp.ClientWebSocketResponse, last: str) -> list[str]:
        """The events (a result's type for result-generated, the message for task-failed) up to
        ``last`` or a task-failed."""
        seen: list[str] = []
        async for m in ws:
            if m.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(m.data)
                seen.append(data["payload"].get("output", {}).get("type") or data["header"]["event"])
                if seen[-1] == "task-failed":
                    seen.append(data["header"]["error_message"])
                    break
                if seen[-1] == last:
                    break
        return seen

    async def scenario() -> list[list[str]]:
        async with aiohttp.ClientSession() as s, s.ws_connect(emulator.base_ws_url, headers=headers) as ws:
            await ws.send_str(msg("run-task", {}))
            started = await events_until(ws, "task-started")  # answered: its arrival is stamped
            emulator.clock.advance(idle_s - 1.0)
            await ws.send_str(msg("continue-task", {"text": "Still here."}))
            served = await events_until(ws, "sentence-end")
            emulator.clock.advance(idle_s)
            failed = await events_until(ws, "task-failed")
            after = [str(m.type) async for m in ws]  # nothing more: the server closes
            return [started, served, failed, after]

    started, served, failed, after = asyncio.run(scenario())
    assert started == ["task-started"]
    assert served == ["sentence-begin", "sentence-synthesis", "sentence-end"]
    assert failed == ["task-failed", "request timeout after 23 seconds."] and after == []

    async def silent() -> list[Any]:
        async with aiohttp.ClientSession() as s, s.ws_connect(emulator.base_ws_url, headers=headers) as ws:
            emulator.clock.advance(idle_s)  # no task yet: closed without a word
            return [m async for m in ws]

    assert asyncio.run(silent()) == []

    async def dropped() -> list[Any]:
        async with aiohttp.ClientSession() as s, s.ws_connect(emulator.base_ws_url, headers=headers) as ws:
            await ws.send_str(msg("run-task", {}))
            return [m async for m in ws]

    emulator.configure(faults={"actions": {"synthesis": {"drop_rate": 1.0}}})
    assert asyncio.run(dropped()) == []
    with pytest.raises(SynthesisError) as exc:
        asyncio.run(synthesize("hi.", voice=vid, model="cosyvoice-v2", api_key=emulator.api_key, url=emulator.base_ws_url))
    assert exc.value.code == "ConnectionError"
