"""Shared test helpers: the real recordings in fixtures/ and signals built from them."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

# Hypothesis fails an example that runs past a deadline and a test whose inputs are slow to
# generate: on a shared machine both measure the load, not the code. Every property test gets
# neither (a test's own @settings still sets the rest).
hypothesis_settings.register_profile("voiceprep", deadline=None, suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile("voiceprep")


def load(name: str) -> tuple[np.ndarray, int]:
    """A fixture as float32 (channels, frames) and its rate."""
    x, sr = sf.read(FIXTURES / name, dtype="float32", always_2d=True)
    return np.ascontiguousarray(x.T), int(sr)


def write_av(path: Path, x: np.ndarray, sr: int, container: str, codec: str, bit_rate: int = 128_000,
             *, faststart: bool = False) -> Path:
    """Encode float (channels, frames) with PyAV (FFmpeg) into ``container`` with ``codec``
    (``faststart``: an MP4's index before its audio)."""
    import av

    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    layout = "mono" if x.shape[0] == 1 else "stereo"
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format=container, options=options) as out:
        stream = out.add_stream(codec, rate=sr, layout=layout)
        if codec not in ("flac",):
            stream.bit_rate = bit_rate
        fmt = stream.codec_context.codec.audio_formats[0].name if stream.codec_context.codec.audio_formats else "fltp"
        resampler = av.AudioResampler(format=fmt, layout=layout, rate=sr)
        hop = 4096
        for i in range(0, x.shape[1], hop):
            block = np.ascontiguousarray(x[:, i : i + hop])
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
            frame.sample_rate = sr
            frame.pts = i
            frame.time_base = Fraction(1, sr)
            for f in resampler.resample(frame):
                for pkt in stream.encode(f):
                    out.mux(pkt)
        for pkt in stream.encode(None):
            out.mux(pkt)
    return path


@pytest.fixture(scope="session")
def librivox() -> tuple[np.ndarray, int]:
    """26.2 s of one LibriVox reader, 16 kHz mono."""
    return load("speech_librivox_16k.wav")


@pytest.fixture
def make_wav(tmp_path: Path) -> Callable[..., Path]:
    def _make(name: str, x: np.ndarray, sr: int, subtype: str = "PCM_16", fmt: str | None = None) -> Path:
        p = tmp_path / name
        sf.write(p, np.atleast_2d(x).T, sr, subtype=subtype, format=fmt)
        return p

    return _make


# ---- emulator fixtures (issue 6: local voice-cloning service) -------------------------------
# `emulator`: a fresh emulator on 127.0.0.1 (free port), data in tmp_path, rate limit off, its time
# a ManualClock that moves only when a test calls `.clock.advance(s)` (or hands `.clock.advance` to a
# client as its sleep): DEPLOYING lasts DEPLOY_S of that clock, so no outcome depends on how fast the
# machine is; `.base_http_url`, `.base_ws_url`, `.api_key`, `.env()`, `.configure(**settings)`.
# `file_server`: a loopback HTTP server over a copy of fixtures/ (the emulator fetches only
# loopback URLs); `.url(name)`, `.dir` (write more files there), `.add(name, data)`.
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402


class LoopbackFileServer:
    """Serves ``dir`` on 127.0.0.1; ``url(name)`` is what to give the emulator as ``input.url``."""

    def __init__(self, directory: Path) -> None:
        import functools
        import http.server
        import threading

        class _Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base signature
                return None

        self.dir = directory
        handler = functools.partial(_Quiet, directory=str(directory))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"{self.origin}/{name}"

    def add(self, name: str, data: bytes) -> str:
        (self.dir / name).write_bytes(data)
        return self.url(name)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def file_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackFileServer]:
    import shutil

    served = tmp_path_factory.mktemp("served")
    for f in FIXTURES.iterdir():
        if f.is_file():
            shutil.copyfile(f, served / f.name)
    server = LoopbackFileServer(served)
    yield server
    server.close()


DEPLOY_S = 10.0  # how long DEPLOYING lasts on the emulator's clock (the real service took about 10.6 s)


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Any]:
    from pipeline.emulator.clock import ManualClock
    from pipeline.emulator.server import start_in_thread

    handle = start_in_thread(tmp_path / "emulator", clock=ManualClock(), deploy_delay_s=DEPLOY_S, rate_limit_rps=None)
    yield handle
    handle.stop()


# ---- end emulator fixtures -------------------------------------------------------------------


# ---- report page fixtures (issue 15: the HTML report) ---------------------------------------
# `report_takes`: a real batch through `run` (with plot data, tests/report_lines.py) and three of
# its inputs through `check`: {"root", "lines", "check", "config"}; built once per session.
@pytest.fixture(scope="session")
def report_takes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import report_lines

    return report_lines.real_batch(tmp_path_factory.mktemp("report_takes"))
