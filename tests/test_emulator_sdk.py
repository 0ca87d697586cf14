"""Conformance: the official dashscope SDK, as a black box, against the local emulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest

dashscope = pytest.importorskip("dashscope")

from dashscope.audio.tts_v2 import AudioFormat, SpeechSynthesizer  # noqa: E402
from dashscope.audio.tts_v2.enrollment import VoiceEnrollmentException, VoiceEnrollmentService  # noqa: E402
from dashscope.common.error import RequestFailure  # noqa: E402
from dashscope.utils.oss_utils import OssUtils  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RESOLVE = {"X-DashScope-OssResourceResolve": "enable"}


@pytest.fixture
def sdk(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The SDK pointed at the emulator (module attributes: the env vars are read only at import)."""
    monkeypatch.setattr(dashscope, "base_http_api_url", emulator.base_http_url)
    monkeypatch.setattr(dashscope, "base_websocket_api_url", emulator.base_ws_url)
    monkeypatch.setattr(dashscope, "api_key", emulator.api_key)
    return emulator


def query(service: VoiceEnrollmentService, voice_id: str) -> dict[str, Any]:
    return cast(dict[str, Any], service.query_voice(voice_id))  # the SDK annotates it List[str]


def wait_ok(emulator: Any, service: VoiceEnrollmentService, voice_id: str) -> str:
    """The voice's status once its review is over: DEPLOYING until the emulator's clock has moved by
    the whole deploy delay, settled from then on."""
    delay = emulator.emulator.settings.deploy_delay_s
    assert query(service, voice_id)["status"] == "DEPLOYING"
    emulator.clock.advance(delay * 0.99)
    assert query(service, voice_id)["status"] == "DEPLOYING"
    emulator.clock.advance(delay * 0.01)
    status = str(query(service, voice_id)["status"])
    assert status != "DEPLOYING"
    return status


def refusal(exc: pytest.ExceptionInfo[VoiceEnrollmentException]) -> tuple[int, str, str]:
    e = exc.value
    assert e._request_id  # every refusal carries the request id
    return e._status_code, e._code, e._error_message


def test_enrollment_lifecycle(sdk: Any, file_server: Any) -> None:
    service = VoiceEnrollmentService()
    url = file_server.url("speech_librivox_16k.wav")
    voice_id = service.create_voice(target_model="cosyvoice-v2", prefix="demo", url=url)
    assert voice_id.startswith("cosyvoice-v2-demo-")
    assert service.get_last_request_id()
    assert wait_ok(sdk, service, voice_id) == "OK"
    info = query(service, voice_id)
    assert info["resource_link"] == url and info["target_model"] == "cosyvoice-v2"
    voices = service.list_voices()
    assert [v["voice_id"] for v in voices] == [voice_id]
    service.update_voice(voice_id, file_server.url("speech_librivox_16k.wav"))
    assert wait_ok(sdk, service, voice_id) == "OK"
    service.delete_voice(voice_id)
    assert service.list_voices() == []


def test_list_paging_and_prefix(sdk: Any) -> None:
    sdk.configure(faults={"urls": [{"pattern": r"^https://voices\.example/", "code": "OK"}]})
    service = VoiceEnrollmentService()
    mine = {service.create_voice("cosyvoice-v3-plus", "mine", f"https://voices.example/{i}.wav",
                                 language_hints=["zh"], max_prompt_audio_length=10.0) for i in range(3)}
    theirs = service.create_voice("cosyvoice-v2", "theirs", "https://voices.example/t.wav")
    pages = [service.list_voices(prefix="mine", page_index=i, page_size=2) for i in range(3)]
    assert [len(p) for p in pages] == [2, 1, 0]
    assert {v["voice_id"] for p in pages for v in p} == mine
    assert {v["voice_id"] for v in service.list_voices(page_size=10)} == mine | {theirs}


def test_missing_voice(sdk: Any) -> None:
    service = VoiceEnrollmentService()
    for call in (service.query_voice, service.delete_voice):
        with pytest.raises(VoiceEnrollmentException) as exc:
            call("cosyvoice-v2-demo-" + "0" * 32)
        assert refusal(exc) == (400, "BadRequest.ResourceNotExist", "The Required resource not exist.")


def test_over_long_prefix(sdk: Any, file_server: Any) -> None:
    with pytest.raises(VoiceEnrollmentException) as exc:
        VoiceEnrollmentService().create_voice("cosyvoice-v2", "elevenchars", file_server.url("speech_librivox_16k.wav"))
    assert refusal(exc) == (400, "InvalidParameter", "prefix should not be longer than 10 characters")


def test_silent_clip(sdk: Any, file_server: Any) -> None:
    with pytest.raises(VoiceEnrollmentException) as exc:
        VoiceEnrollmentService().create_voice("cosyvoice-v2", "demo", file_server.url("speech_arctic_awb_16k.wav"))
    assert refusal(exc) == (400, "Audio.AudioSilentError", "silent audio error!")
    assert "Code: Audio.AudioSilentError" in str(exc.value)


def test_wrong_key(sdk: Any) -> None:
    with pytest.raises(VoiceEnrollmentException) as exc:
        VoiceEnrollmentService(api_key="sk-wrong").list_voices()
    assert refusal(exc)[:2] == (401, "InvalidApiKey")


def test_upload_then_enroll_from_oss(sdk: Any) -> None:
    oss_url, certificate = OssUtils.upload(
        model="voice-enrollment", file_path=str(FIXTURES / "speech_librivox_16k.wav"), api_key=sdk.api_key
    )
    assert oss_url.startswith("oss://dashscope-instant/") and oss_url.endswith("/speech_librivox_16k.wav")
    assert certificate["upload_host"].startswith(sdk.base_http_url.rsplit("/api/v1", 1)[0])
    with pytest.raises(VoiceEnrollmentException) as exc:
        VoiceEnrollmentService().create_voice("cosyvoice-v3.5-plus", "oss", oss_url)
    assert refusal(exc)[1] == "BadRequest.InputDownloadFailed"
    service = VoiceEnrollmentService(headers=RESOLVE)
    voice_id = service.create_voice("cosyvoice-v3.5-plus", "oss", oss_url, enable_preprocess=True)
    assert wait_ok(sdk, service, voice_id) == "OK"


def test_synthesis_with_the_cloned_voice(sdk: Any, file_server: Any) -> None:
    service = VoiceEnrollmentService()
    voice_id = service.create_voice("cosyvoice-v2", "tts", file_server.url("speech_librivox_16k.wav"))
    assert wait_ok(sdk, service, voice_id) == "OK"
    pcm = SpeechSynthesizer(model="cosyvoice-v2", voice=voice_id, format=AudioFormat.PCM_22050HZ_MONO_16BIT).call(
        "Hello from the emulator. This is a cloned voice."
    )
    assert isinstance(pcm, bytes) and len(pcm) > 22050  # > 0.5 s of 16-bit mono
    mp3 = SpeechSynthesizer(model="cosyvoice-v2", voice=voice_id).call("你好世界")  # AudioFormat.DEFAULT: mp3 22050 Hz
    assert isinstance(mp3, bytes) and (mp3[:3] == b"ID3" or mp3[0] == 0xFF)
    synth = SpeechSynthesizer(model="cosyvoice-v2", voice=voice_id, format=AudioFormat.WAV_16000HZ_MONO_16BIT)
    wav = synth.call("part one, part two.")
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
    last = synth.get_response()
    assert last["header"]["event"] == "task-finished"
    assert last["payload"]["usage"]["characters"] == len("part one, part two.")


def test_synthesis_refusals(sdk: Any, file_server: Any) -> None:
    sdk.configure(faults={"urls": [{"pattern": r"^https://voices\.example/", "code": "OK"}]}, deploy_delay_s=0.0)
    voice_id = VoiceEnrollmentService().create_voice("cosyvoice-v3-flash", "flash", "https://voices.example/a.wav")
    with pytest.raises(RequestFailure) as exc:
        SpeechSynthesizer(model="cosyvoice-v2", voice=voice_id, format=AudioFormat.PCM_16000HZ_MONO_16BIT).call("hi.")
    assert exc.value.name == "InvalidParameter"
    with pytest.raises(RequestFailure) as exc:
        SpeechSynthesizer(model="cosyvoice-v2", voice="cosyvoice-v2-gone-" + "0" * 32).call("hi.")
    assert exc.value.name == "InternalError" and exc.value.message == "Remote cancelled grpc stream."


def test_callback_mode_streams_events(sdk: Any) -> None:
    from dashscope.audio.tts_v2 import ResultCallback

    sdk.configure(faults={"urls": [{"pattern": r"^https://voices\.example/", "code": "OK"}]}, deploy_delay_s=0.0)
    voice_id = VoiceEnrollmentService().create_voice("cosyvoice-v2", "cb", "https://voices.example/a.wav")

    class Callback(ResultCallback):
        def __init__(self) -> None:
            self.events: list[str] = []
            self.audio = 0
            self.completed = False

        def on_event(self, message: str) -> None:
            self.events.append(json.loads(message)["payload"]["output"]["type"])

        def on_data(self, data: bytes) -> None:
            self.audio += len(data)

        def on_complete(self) -> None:
            self.completed = True

    cb = Callback()
    synth = SpeechSynthesizer(model="cosyvoice-v2", voice=voice_id, format=AudioFormat.PCM_24000HZ_MONO_16BIT,
                              callback=cb)
    synth.streaming_call("One sentence. ")
    synth.streaming_call("Two sentences.")
    synth.streaming_complete()
    assert cb.completed and cb.audio > 0
    assert cb.events == ["sentence-begin", "sentence-synthesis", "sentence-end"] * 2


SCRIPT = """
import json, sys
from dashscope.audio.tts_v2 import AudioFormat, SpeechSynthesizer
from dashscope.audio.tts_v2.enrollment import VoiceEnrollmentService
service = VoiceEnrollmentService()
voice_id = service.create_voice("cosyvoice-v2", "env", "https://voices.example/a.wav")
audio = SpeechSynthesizer(model="cosyvoice-v2", voice=voice_id, format=AudioFormat.PCM_16000HZ_MONO_16BIT).call("hi.")
print(json.dumps({"voice_id": voice_id, "voices": len(service.list_voices()), "audio": len(audio)}))
"""


def test_sdk_configured_by_environment_only(emulator: Any) -> None:
    """The documented way: DASHSCOPE_* variables set before `import dashscope`, no code changes."""
    import os
    import subprocess
    import sys

    emulator.configure(faults={"urls": [{"pattern": r"^https://voices\.example/", "code": "OK"}]}, deploy_delay_s=0.0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")}
    env.update(emulator.env())
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["voice_id"].startswith("cosyvoice-v2-env-")
    assert result["voices"] == 1 and result["audio"] > 0
