"""The one 16-bit PCM WAV encoding, and atomic file writes with ordinary permissions."""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from pathlib import Path

import numpy as np

WAV_HEADER_BYTES = 44


def wav16(samples: np.ndarray, sample_rate: int) -> bytes:
    """Float samples ``(channels, frames)`` (or mono 1-D) as a canonical 16-bit PCM WAV file:
    each sample rounded to ``k / 32768`` and clipped to the 16-bit range, interleaved, behind a
    44-byte RIFF header (the bytes libsndfile writes for the same audio)."""
    x = np.atleast_2d(np.asarray(samples, dtype=np.float64))
    pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2")
    channels = pcm.shape[0]
    data = np.ascontiguousarray(pcm.T).tobytes()
    fmt = struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * channels * 2, channels * 2, 16)
    return b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + fmt + b"data" + struct.pack("<I", len(data)) + data


def wav16_size_bytes(frames: int, channels: int) -> int:
    """Size of ``wav16``'s file for this many frames and channels."""
    return WAV_HEADER_BYTES + 2 * frames * channels


def temp_path(path: str | os.PathLike[str]) -> Path:
    """The temporary file ``write_atomic`` writes ``path`` through: beside it, named after it (so a
    run killed mid-write leaves a file the next write of the same output replaces, and whoever
    abandons a write knows what to remove), and short (the target's own name may already be as
    long as the file system allows)."""
    target = Path(path)
    digest = hashlib.blake2b(os.fsencode(target.name), digest_size=8).hexdigest()
    return target.parent / f".voiceprep-{digest}.part"


def discard_temp(path: str | os.PathLike[str]) -> None:
    """Remove what an abandoned ``write_atomic`` of ``path`` left, if anything."""
    with contextlib.suppress(OSError):
        os.unlink(temp_path(path))


def write_atomic(path: str | os.PathLike[str], data: bytes) -> int:
    """Write ``data`` to ``path`` through ``temp_path(path)``, fsynced, then renamed over ``path``:
    an interrupted write leaves no partial file. The file gets the permissions any new file gets
    here (0644 under umask 022). Returns the size in bytes."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return len(data)
