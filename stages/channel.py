"""channel: pick the channel that carries the voice (or a safe combination) and output mono."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from pipeline.clip import Clip, Fact
from pipeline.registry import register
from pipeline.stage import option

Policy = Literal["auto", "first", "mix", "loudest"]


_CHUNK = 1 << 18  # samples per partial dot product: float64 sums without float64 copies of the signal


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """``sum(a * b)`` accumulated in float64 over float32 chunks (no full-length temporaries)."""
    return float(sum(float(np.dot(a[i : i + _CHUNK], b[i : i + _CHUNK])) for i in range(0, len(a), _CHUNK)))


def _mix(samples: np.ndarray) -> np.ndarray:
    """The channels' average, built in one float32 buffer (no second full-length temporary)."""
    out = np.array(samples[0], dtype=np.float32)
    for ch in samples[1:]:
        out += ch
    out *= np.float32(1.0 / samples.shape[0])
    return out


def _rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10(_dot(x, x) / max(len(x), 1) + 1e-20))


def choose(
    samples: np.ndarray, policy: str = "auto", dominance_db: float = 10.0
) -> tuple[np.ndarray, dict[str, object]]:
    """Mono signal from ``(channels, frames)`` and a record of what was chosen and why.

    ``auto``: a channel more than ``dominance_db`` louder than every other one is the voice
    (voice recorded on one side only); two channels in opposite phase (correlation < -0.5) are
    recombined as (L - R) / 2 instead of cancelling; coherent channels (> 0.5) are averaged;
    otherwise the loudest channel is kept.
    """
    if samples.shape[0] == 1:
        return samples[0], {"channel_policy": "mono"}
    levels = [_rms_db(c) for c in samples]
    best = int(np.argmax(levels))
    others = [lv for i, lv in enumerate(levels) if i != best]
    record: dict[str, object] = {"channel_levels_db": [round(v, 1) for v in levels]}
    if policy == "first":
        return samples[0], {**record, "channel_policy": "first"}
    if policy == "loudest":
        return samples[best], {**record, "channel_policy": f"channel {best + 1}"}
    if policy == "mix":
        return _mix(samples), {**record, "channel_policy": "mix"}
    if levels[best] - max(others) > dominance_db:
        return samples[best], {
            **record,
            "channel_policy": f"channel {best + 1} (others {dominance_db:.0f}+ dB quieter)",
        }
    a, b = samples[0], samples[1]
    denom = float(np.sqrt(_dot(a, a) * _dot(b, b)))
    corr = _dot(a, b) / denom if denom > 0 else 0.0
    record["channel_correlation"] = round(corr, 3)
    if samples.shape[0] == 2 and corr < -0.5:
        side = np.subtract(a, b, dtype=np.float32)
        side *= np.float32(0.5)
        return side, {**record, "channel_policy": "opposite phase: (L - R) / 2"}
    if corr > 0.5:
        return _mix(samples), {**record, "channel_policy": "mix (coherent channels)"}
    return samples[best], {**record, "channel_policy": f"channel {best + 1} (loudest, channels differ)"}


@register
@dataclass(frozen=True)
class Channel:
    """Output mono from the channel that carries the voice (not a blind average).

    Handles a voice in one channel only and channels in opposite phase (L = -R), which an
    average would silence. The service itself keeps only the first channel.
    """

    name: ClassVar[str] = "channel"
    changes_audio: ClassVar[bool] = True
    needs: ClassVar[frozenset[Fact]] = frozenset()
    provides: ClassVar[frozenset[Fact]] = frozenset()

    policy: Policy = option("auto", "auto | first | mix | loudest")
    dominance_db: float = option(
        10.0, "auto: a channel this much louder than the others is taken alone (dB)", above=0.0, max=60.0
    )

    def __call__(self, clip: Clip) -> Clip:
        mono, record = choose(clip.samples, self.policy, self.dominance_db)
        out = mono[np.newaxis, :]
        out.setflags(write=False)  # a fresh array nobody else holds: the clip keeps it without a copy
        return clip.replace(samples=out).measured(**record)
