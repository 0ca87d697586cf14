"""edges: a clean 0.1-0.3 s lead-in and tail around the speech, with short fades."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from pipeline.clip import Clip, Fact, SpeechMap
from pipeline.registry import register
from pipeline.stage import option


def fit_edges(
    x: np.ndarray, rate: int, first_s: float, last_s: float, min_s: float, max_s: float, target_s: float, fade_s: float
) -> tuple[np.ndarray, float]:
    """Trim or pad (with digital silence) so that speech starts and ends ``target_s`` from the ends
    when the existing margin is outside [min_s, max_s]; fade in/out over ``fade_s``. Returns the
    audio and the shift applied to times (seconds)."""
    lead, tail = first_s, len(x) / rate - last_s
    shift = 0.0
    if lead > max_s:
        cut = int(round((lead - target_s) * rate))
        x, shift = x[cut:], -cut / rate
    elif lead < min_s:
        pad = int(round((target_s - lead) * rate))
        x, shift = np.concatenate([np.zeros(pad, np.float32), x]), pad / rate
    if tail > max_s:
        x = x[: len(x) - int(round((tail - target_s) * rate))]
    elif tail < min_s:
        x = np.concatenate([x, np.zeros(int(round((target_s - tail) * rate)), np.float32)])
    x = x.astype(np.float32, copy=True)
    n = min(int(fade_s * rate), len(x) // 2)
    if n > 0:
        ramp = np.sin(np.linspace(0.0, np.pi / 2, n, dtype=np.float32)) ** 2
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x, shift


@register
@dataclass(frozen=True)
class Edges:
    """Give the clip ``min_s``-``max_s`` of clean silence before and after the speech, with fades."""

    name: ClassVar[str] = "edges"
    changes_audio: ClassVar[bool] = True
    needs: ClassVar[frozenset[Fact]] = frozenset({"speech"})
    provides: ClassVar[frozenset[Fact]] = frozenset({"speech"})

    min_s: float = option(0.1, "shortest lead-in / tail (seconds)", min=0.0, max=2.0)
    max_s: float = option(0.3, "longest lead-in / tail (seconds)", min=0.0, max=2.0)
    target_s: float = option(0.2, "lead-in / tail when one is trimmed or padded (seconds)", min=0.0, max=2.0)
    fade_s: float = option(0.01, "fade-in and fade-out length (seconds)", min=0.0, max=0.5)

    def __post_init__(self) -> None:
        if not 0 <= self.min_s <= self.target_s <= self.max_s:
            raise ValueError("need 0 <= min_s <= target_s <= max_s")
        if not 0 <= self.fade_s <= self.min_s:
            raise ValueError("fade_s must be between 0 and min_s")

    def __call__(self, clip: Clip) -> Clip:
        if clip.speech is None:
            raise ValueError("edges needs the speech map: put it after a stage that finds speech")
        segs = clip.speech.segments.tolist()
        if not segs:
            return clip
        x, shift = fit_edges(
            clip.samples[0],
            clip.sample_rate,
            segs[0][0],
            segs[-1][1],
            self.min_s,
            self.max_s,
            self.target_s,
            self.fade_s,
        )
        dur = len(x) / clip.sample_rate
        moved = [[round(min(max(a + shift, 0.0), dur), 4), round(min(max(b + shift, 0.0), dur), 4)] for a, b in segs]
        runs = [[round(min(max(a + shift, 0.0), dur), 4), round(min(max(b + shift, 0.0), dur), 4)]
                for a, b in clip.speech.runs.tolist()]
        speech = SpeechMap(segments=np.asarray(moved), runs=np.asarray(runs), duration_s=dur)
        return clip.replace(samples=x[np.newaxis, :], speech=speech)
