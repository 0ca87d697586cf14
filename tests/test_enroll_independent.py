"""End to end against an emulator whose audio judge is written here, independent of pipeline/.

The other end-to-end tests let the emulator judge audio with the project's own `check`, so they
cannot catch a rule the project gets wrong on both sides. Here the judge decodes with soundfile and
counts speech by frame energy: the project's client and `voiceprep enroll` must get their clips
past a judge that shares no code with them.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from conftest import DEPLOY_S, FIXTURES

from pipeline.cli import main
from pipeline.emulator.clock import ManualClock
from pipeline.emulator.server import start_in_thread
from pipeline.service.client import EnrollmentClient
from pipeline.service.errors import ServiceError
from pipeline.service.settings import ServiceSettings

MODEL = "cosyvoice-v2"
READER = "speech_librivox_16k.wav"  # 26 s of one reader


@dataclass(frozen=True)
class EnergyVerdict:
    ok: bool
    code: str | None = None
    message: str = ""
    warnings: tuple[dict[str, str], ...] = ()
    duration_s: float = 0.0
    speech_s: float = 0.0
    sample_rate: int = 0


@dataclass
class EnergyJudge:
    """The service's documented rules, measured simply: WAV or MP3, at least 16 kHz, at most 60 s, and more
    than ``min_speech_s`` of 20 ms frames (first channel) that stand 15 dB over the noise floor."""

    min_speech_s: float = 10.0
    frame_s: float = 0.02
    seen: list[EnergyVerdict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, path: Path) -> EnergyVerdict:
        verdict = self.judge(path)
        with self.lock:
            self.seen.append(verdict)
        return verdict

    def judge(self, path: Path) -> EnergyVerdict:
        try:
            info = sf.info(str(path))
            x, sr = sf.read(str(path), dtype="float64", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError):
            return EnergyVerdict(False, "Audio.DecoderError", "cannot decode")
        if info.format not in ("WAV", "MP3"):
            return EnergyVerdict(False, "BadRequest.UnsupportedFileFormat", info.format)
        duration_s = x.shape[0] / sr
        if sr < 16000:
            return EnergyVerdict(False, "Audio.AudioRateError", f"{sr} Hz", duration_s=duration_s, sample_rate=sr)
        if duration_s > 60.0:
            return EnergyVerdict(False, "InternalError", "too long", duration_s=duration_s, sample_rate=sr)
        speech_s = self.speech_seconds(x[:, 0], sr)
        if speech_s <= self.min_speech_s:
            code = "Audio.AudioSilentError" if speech_s < 1.0 else "Audio.AudioShortError"
            return EnergyVerdict(False, code, f"{speech_s:.1f} s of speech", duration_s=duration_s,
                                 speech_s=speech_s, sample_rate=sr)
        return EnergyVerdict(True, duration_s=duration_s, speech_s=speech_s, sample_rate=sr)

    def speech_seconds(self, x: np.ndarray, sr: int) -> float:
        n = int(sr * self.frame_s)
        frames = x[: x.size // n * n].reshape(-1, n)
        if frames.shape[0] == 0:
            return 0.0
        level_db = 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
        floor_db = float(np.percentile(level_db, 10))
        threshold_db = max(floor_db + 15.0, float(level_db.max()) - 45.0, -60.0)
        return float(np.count_nonzero(level_db > threshold_db)) * self.frame_s


@pytest.fixture
def judge() -> EnergyJudge:
    return EnergyJudge()


@pytest.fixture
def independent(tmp_path: Path, judge: EnergyJudge) -> Iterator[Any]:
    """An emulator with this judge, on a clock that moves only when a test moves it (as conftest's)."""
    handle = start_in_thread(tmp_path / "emulator", judge=judge, clock=ManualClock(), deploy_delay_s=DEPLOY_S,
                             rate_limit_rps=None)
    yield handle
    handle.stop()


def test_the_independent_judge_on_real_recordings(judge: EnergyJudge, tmp_path: Path) -> None:
    reader = judge.judge(FIXTURES / READER)
    assert reader.ok and 15.0 < reader.speech_s < reader.duration_s
    short = judge.judge(FIXTURES / "speech_arctic_awb_16k.wav")
    assert (short.ok, short.code) == (False, "Audio.AudioShortError") and 1.0 < short.speech_s < 4.0
    assert judge.judge(FIXTURES / "speech_chan3_11k.wav").code == "Audio.AudioRateError"
    assert judge.judge(FIXTURES / "meeting_ami_trn05_16k.flac").code == "BadRequest.UnsupportedFileFormat"
    x, sr = sf.read(FIXTURES / READER, dtype="float32")
    quiet = tmp_path / "quiet.wav"
    sf.write(quiet, np.zeros_like(x), sr, subtype="PCM_16")
    assert judge.judge(quiet).code == "Audio.AudioSilentError"
    garbage = tmp_path / "notes.wav"
    garbage.write_bytes(b"these are not audio bytes" * 100)
    assert judge.judge(garbage).code == "Audio.DecoderError"


def test_client_meets_the_independent_judge(independent: Any, judge: EnergyJudge, file_server: Any) -> None:
    clock = independent.clock
    with EnrollmentClient(ServiceSettings.from_env(independent.env()), sleep=clock.advance, clock=clock.monotonic) as c:
        vid = c.create_voice(MODEL, "indep", file_server.url(READER))
        created = clock.time()
        assert c.wait_until_ready(vid, poll_interval_s=1.0)["status"] == "OK"
        assert clock.time() - created >= DEPLOY_S  # the client waited out the review on the emulator's clock
        with pytest.raises(ServiceError) as refused:
            c.create_voice(MODEL, "indep", file_server.url("speech_arctic_awb_16k.wav"))
    assert (refused.value.code, refused.value.message) == ("Audio.AudioShortError", "valid audio too short!")
    assert refused.value.http_status == 400 and refused.value.request_id
    assert [v.code for v in judge.seen] == [None, "Audio.AudioShortError"]


def test_voiceprep_enroll_passes_the_independent_judge(
    independent: Any, judge: EnergyJudge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    independent.configure(deploy_delay_s=0.0)  # the CLI sleeps for real: voices are ready at their first query
    for k, v in independent.env().items():
        monkeypatch.setenv(k, v)
    for k in ("DASHSCOPE_WORKSPACE", "DASHSCOPE_API_REGION", "DASHSCOPE_BASE_URL"):
        monkeypatch.delenv(k, raising=False)
    src = tmp_path / "in"
    src.mkdir()
    x, sr = sf.read(FIXTURES / READER, dtype="float32")
    sf.write(src / "reader_loud.wav", x, sr, subtype="PCM_16")
    sf.write(src / "reader_quiet.wav", x * 0.1, sr, subtype="PCM_16")  # -20 dB: the pipeline brings it up
    shutil.copy(FIXTURES / "speech_arctic_slt_16k.wav", src / "short.wav")
    shutil.copy(FIXTURES / "speech_chan3_11k.wav", src / "narrow.wav")
    out = tmp_path / "out"
    code = main(["enroll", str(src), "--prefix", "indep", "--target-model", MODEL, "--out", str(out), "--jobs", "1"])
    assert code == 1, capsys.readouterr()  # the short and the 11 kHz clips are refused before any upload
    rows = {Path(r["input"]).name: r for r in map(json.loads, (out / "enroll-report.jsonl").read_text().splitlines())}
    assert {n for n, r in rows.items() if r["status"] == "ok"} == {"reader_loud.wav", "reader_quiet.wav"}
    assert {rows[n]["voice_status"] for n in ("reader_loud.wav", "reader_quiet.wav")} == {"OK"}
    assert rows["short.wav"]["code"] == "Audio.AudioSilentError"
    assert rows["narrow.wav"]["code"] == "Audio.AudioRateError"
    # The judge saw exactly the two uploaded clips, and each had well over 10 s of speech by its own measure.
    assert len(judge.seen) == 2 and all(v.ok for v in judge.seen)
    assert all(v.speech_s > 12.0 and v.duration_s <= 20.0 and v.sample_rate >= 16000 for v in judge.seen)
