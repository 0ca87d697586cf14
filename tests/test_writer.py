"""writer: the one 16-bit WAV encoding (libsndfile's bytes) and atomic writes with ordinary permissions."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import load

from pipeline.writer import wav16, wav16_size_bytes, write_atomic


@pytest.mark.parametrize("channels", [1, 2])
def test_wav16_is_the_file_libsndfile_writes(channels: int):
    x, sr = load("speech_north_wind_44k.wav")
    y = np.vstack([x[0], -0.5 * x[0]])[:channels, : sr * 3 + 1]  # an odd number of frames too
    pcm = np.clip(np.round(y.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    ref = io.BytesIO()
    sf.write(ref, pcm.T, sr, subtype="PCM_16", format="WAV")
    data = wav16(y, sr)
    assert data == ref.getvalue()
    assert len(data) == wav16_size_bytes(y.shape[1], channels)
    back, rate = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
    assert rate == sr and np.array_equal(back.T, pcm)


def test_wav16_rounds_and_clips_to_the_16_bit_grid():
    y = np.array([[-1.5, -1.0, -0.5 / 32768, 0.49 / 32768, 1.0, 2.0]], dtype=np.float32)
    back, _ = sf.read(io.BytesIO(wav16(y, 16000)), dtype="int16")
    assert back.tolist() == [-32768, -32768, 0, 0, 32767, 32767]


def test_write_atomic_leaves_no_temp_and_gets_ordinary_permissions(tmp_path: Path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "deep" / "o.wav"
        assert write_atomic(out, b"abc") == 3
        assert out.read_bytes() == b"abc"
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
        assert [p.name for p in out.parent.iterdir()] == ["o.wav"]
        write_atomic(out, b"second")  # replaces in place
        assert out.read_bytes() == b"second" and [p.name for p in out.parent.iterdir()] == ["o.wav"]
    finally:
        os.umask(old)


def test_write_atomic_takes_a_name_as_long_as_the_filesystem_allows(tmp_path: Path):
    out = tmp_path / ("n" * 251 + ".wav")
    write_atomic(out, b"x")
    assert out.read_bytes() == b"x"


def test_a_failed_write_leaves_nothing(tmp_path: Path):
    (tmp_path / "is_a_folder").mkdir()
    with pytest.raises(OSError):
        write_atomic(tmp_path / "is_a_folder", b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["is_a_folder"]
