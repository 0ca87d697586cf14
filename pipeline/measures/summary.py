"""Every quality measure of a clip as one flat dict, and the penalty that ranks window candidates."""

from __future__ import annotations

from typing import Any

import numpy as np

from .frames import ANALYSIS_RATE, as_mono, as_segments, to_rate
from .loudness import loudness_spread
from .music import music_share
from .noise import clipping, dc_offset, snr, snr_estimate
from .spectrum import effective_bandwidth, measure_hum, rumble_db
from .voices import speaker_change, voice_evidence


def _r(v: float | None, digits: int) -> float | None:
    """``v`` rounded, None for None or NaN."""
    return None if v is None or v != v else round(float(v), digits)


def measure(x: np.ndarray, sample_rate: int, segments: Any) -> dict[str, Any]:
    """Every quality measure of mono ``x`` (or channel 0 of ``(channels, frames)``) whose speech
    lies in ``segments`` (seconds), as the flat ``metrics`` entries the stage reports."""
    x = as_mono(x)
    segs = as_segments(segments)
    x16 = to_rate(x, sample_rate)
    noise = snr(x16, segs)
    ratio, run = clipping(x)
    spread, trend = loudness_spread(x16, ANALYSIS_RATE, segs)
    h = measure_hum(x16, ANALYSIS_RATE)
    music = music_share(x16, segs)
    voices = voice_evidence(x16, segs)
    return {
        "snr_db": round(noise.snr_db, 1),
        "snr_method": noise.method,
        "snr_floor_db": round(noise.floor_db, 1),
        "snr_wada_db": round(noise.wada_db, 1),
        "voice_hnr_db": _r(noise.hnr_db, 1),
        "clipped_ratio": round(ratio, 6),
        "clipped_run_ms": round(1000.0 * run / sample_rate, 2),
        "loudness_spread_lu": round(spread, 1),
        "loudness_trend_lu_per_10s": round(trend, 1),
        "dc_offset": round(dc_offset(x), 5),
        "hum_hz": _r(h.f0_hz, 2),
        "hum_prominence_db": round(h.peak_prominence_db, 1),
        "hum_db": round(h.level_db(), 1),
        "hum_lines": len(h.lines_hz),
        "rumble_db": round(rumble_db(x16, ANALYSIS_RATE), 1),
        "bandwidth_hz": round(effective_bandwidth(x, sample_rate, segs)),
        "music_share": None if music is None else round(music, 3),
        "voice_distance": _r(voices.distance, 3),
        "voice_groups_s": [round(voices.group_s[0], 1), round(voices.group_s[1], 1)],
    }



def window_quality_penalty(
    x: np.ndarray, sample_rate: int, segments: Any, *, mfccs: np.ndarray | None = None
) -> float:
    """How far a candidate window falls short of clean, steady, single-voice speech: 0 is clean,
    larger is worse (about 1 per 10 dB of SNR under 30 dB, per 4 LU of loudness spread over 8 LU,
    per 0.1 of speaker-change evidence over -0.05, per 0.1 % of clipped samples, and 2 for
    music filling the pauses). ``x`` is the window (mono or ``(channels, frames)``; channel 0 is
    judged), ``segments`` its speech in seconds from the window's start, ``mfccs`` the window's
    MFCCs when the caller has them (see ``mfcc_slice``). Pure and cheap, so it can be called on
    every candidate.
    """
    x = as_mono(x)
    segs = as_segments(segments)
    x16 = to_rate(x, sample_rate)
    snr, _ = snr_estimate(x16, ANALYSIS_RATE, segs)
    spread, _ = loudness_spread(x16, ANALYSIS_RATE, segs)
    ratio, _ = clipping(x)
    music = music_share(x16, segs) or 0.0
    change = speaker_change(x16, segs, mfccs=mfccs)
    return float(
        max(0.0, 30.0 - snr) / 10.0
        + max(0.0, spread - 8.0) / 4.0
        + max(0.0, change + 0.05) * 10.0
        + ratio * 1000.0
        + 2.0 * music
    )
