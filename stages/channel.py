"""channel: pick the channel that carries the voice (or a safe combination) and output mono."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from pipeline.clip import Clip
from pipeline.registry import register
from pipeline.stage import option

Policy = Literal["auto", "first", "mix", "loudest"]


def _rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


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
        return samples.mean(axis=0), {**record, "channel_policy": "mix"}
    if levels[best] - max(others) > dominance_db:
        return samples[best], {
            **record,
            "channel_policy": f"channel {best + 1} (others {dominance_db:.0f}+ dB quieter)",
        }
    a, b = samples[0].astype(np.float64), samples[1].astype(np.float64)
    denom = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    corr = float(np.dot(a, b) / denom) if denom > 0 else 0.0
    record["channel_correlation"] = round(corr, 3)
    if samples.shape[0] == 2 and corr < -0.5:
        return ((a - b) / 2).astype(np.float32), {**record, "channel_policy": "opposite phase: (L - R) / 2"}
    if corr > 0.5:
        return samples.mean(axis=0), {**record, "channel_policy": "mix (coherent channels)"}
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

    policy: Policy = option("auto", "auto | first | mix | loudest")
    dominance_db: float = option(10.0, "auto: a channel this much louder than the others is taken alone (dB)")

    def __post_init__(self) -> None:
        if self.dominance_db <= 0:
            raise ValueError("dominance_db must be positive")

    def __call__(self, clip: Clip) -> Clip:
        mono, record = choose(clip.samples, self.policy, self.dominance_db)
        metrics = {**dict(clip.info.get("metrics", {})), "channel_policy": record["channel_policy"]}
        return clip.replace(samples=mono[np.newaxis, :]).with_info(**record, metrics=metrics)
