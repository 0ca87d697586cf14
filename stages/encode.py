"""encode: quantise to 16-bit PCM with TPDF dither and make the WAV file's bytes, once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from pipeline.clip import Clip, Fact
from pipeline.errors import service_error
from pipeline.limits import MAX_FILE_BYTES
from pipeline.registry import register
from pipeline.stage import option
from pipeline.writer import wav16, wav16_size_bytes


def quantize16(x: np.ndarray, dither: bool = True, seed: int = 0) -> np.ndarray:
    """Float samples on the 16-bit grid (k / 32768), with triangular (TPDF) dither of +-1 LSB."""
    y = np.asarray(x, dtype=np.float64) * 32768.0
    if dither:
        rng = np.random.default_rng(seed)
        y = y + rng.random(y.shape) - rng.random(y.shape)
    return (np.clip(np.round(y), -32768, 32767) / 32768.0).astype(np.float32)


@register
@dataclass(frozen=True)
class Encode:
    """Quantise to 16-bit PCM WAV (TPDF dither, deterministic) and make the file's bytes; refuse a result over 10 MB.

    Provides ``encoded``: the bytes the runner writes and the `enroll` stage uploads. Raises
    Audio.FileSizeExceed.
    """

    name: ClassVar[str] = "encode"
    changes_audio: ClassVar[bool] = True
    needs: ClassVar[frozenset[Fact]] = frozenset()
    provides: ClassVar[frozenset[Fact]] = frozenset({"encoded"})

    dither: bool = option(True, "add TPDF dither before rounding to 16 bits")

    def __call__(self, clip: Clip) -> Clip:
        y = quantize16(clip.samples, self.dither)
        size = wav16_size_bytes(y.shape[1], y.shape[0])
        if size > MAX_FILE_BYTES:
            raise service_error("Audio.FileSizeExceed", f"the encoded WAV would be {size / 1e6:.1f} MB")
        src = dataclasses.replace(
            clip.source,
            container="wav",
            codec="pcm_s16le",
            bit_depth=16,
            channels=y.shape[0],
            sample_rate=clip.sample_rate,
            duration_s=y.shape[1] / clip.sample_rate,
            size_bytes=size,
        )
        return clip.replace(samples=y, source=src, encoded=wav16(y, clip.sample_rate))
