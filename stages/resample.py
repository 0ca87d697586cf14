"""resample: bring the clip to the target rate with soxr, never faking bandwidth."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from pipeline.clip import Clip, Fact
from pipeline.errors import service_error
from pipeline.limits import MIN_SAMPLE_RATE_HZ
from pipeline.registry import register
from pipeline.stage import option


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """soxr high-quality resampling of ``(channels, frames)``."""
    import soxr

    if rate_in == rate_out:
        return x
    return np.ascontiguousarray(soxr.resample(x.T, rate_in, rate_out, quality="HQ").T.astype(np.float32))


@register
@dataclass(frozen=True)
class Resample:
    """Downsample to ``target_hz`` (default 24 kHz, the rate CosyVoice v2/v3 extract features at).

    Rates between 16 kHz and the target are kept (no upsampling to fake bandwidth). Sources
    under 16 kHz raise Audio.AudioRateError unless ``allow_upsample``, which upsamples and warns
    ``narrowband``.
    """

    name: ClassVar[str] = "resample"
    changes_audio: ClassVar[bool] = True
    needs: ClassVar[frozenset[Fact]] = frozenset()
    provides: ClassVar[frozenset[Fact]] = frozenset()

    target_hz: int = option(24000, "output sample rate for sources above it (Hz)", min=MIN_SAMPLE_RATE_HZ, max=192000)
    allow_upsample: bool = option(False, "upsample sources under 16 kHz instead of refusing them (warns narrowband)")


    def __call__(self, clip: Clip) -> Clip:
        rate = clip.sample_rate
        source_rate = min(rate, clip.source.sample_rate)
        if source_rate < MIN_SAMPLE_RATE_HZ:
            if not self.allow_upsample:
                raise service_error(
                    "Audio.AudioRateError",
                    f"sample rate {source_rate} Hz is under 16 kHz",
                    hint="record again at 16 kHz or more, or set `allow_upsample: true` on the resample stage "
                    "(the voice will sound muffled)",
                )
            out = resample(clip.samples, rate, self.target_hz)
            return clip.replace(samples=out, sample_rate=self.target_hz).warn(
                "narrowband",
                f"upsampled from {source_rate} Hz: no content above {source_rate // 2} Hz",
                "the clone will sound like a telephone; record again at 16 kHz or more if you can",
            )
        if rate > self.target_hz:
            return clip.replace(samples=resample(clip.samples, rate, self.target_hz), sample_rate=self.target_hz)
        return clip
