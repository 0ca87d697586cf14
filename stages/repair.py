"""repair: do-no-harm fixes (DC, rumble high-pass, hum notch, optional denoiser), each kept only if it helps."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from pipeline.clip import Clip, Fact
from pipeline.dsp import butter_highpass, notch, sosfiltfilt
from pipeline.measures import frames, noise, spectrum
from pipeline.registry import register
from pipeline.speech import segments_of as speech_segments
from pipeline.stage import option


def remove_dc(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Subtract each channel's mean."""
    return np.asarray(x - x.mean(axis=-1, keepdims=True), dtype=np.float32)


def highpass(x: np.ndarray, sample_rate: int, cutoff_hz: float) -> np.ndarray:
    """Second-order Butterworth high-pass run forwards and backwards (zero phase)."""
    if x.shape[-1] < 64:
        return np.asarray(x, dtype=np.float32)
    return np.asarray(sosfiltfilt(butter_highpass(2, cutoff_hz, sample_rate), x), dtype=np.float32)


def notch_lines(x: np.ndarray, sample_rate: int, lines_hz: np.ndarray, width_hz: float = 3.0) -> np.ndarray:
    """Zero-phase notches ``width_hz`` wide at each of ``lines_hz`` (measured frequencies, Hz),
    run as one cascade of second-order sections forwards and backwards, on every channel."""
    sections = [notch(float(f), float(f) / width_hz, sample_rate) for f in lines_hz if f < 0.45 * sample_rate]
    if not sections or x.shape[-1] < 64:
        return np.asarray(x, dtype=np.float32)
    return np.asarray(sosfiltfilt(np.array(sections), x), dtype=np.float32)


def remove_hum(
    x: np.ndarray, sample_rate: int, *, trigger_db: float = 10.0, width_hz: float = 3.0, passes: int = 3
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """Measure the mains comb on channel 0 of ``(channels, frames)`` ``x``; when a line stands
    ``trigger_db`` over its surroundings, notch every harmonic that stands out (``MIN_LINE_DB``),
    at its measured frequency, on every channel; re-measure and notch what still stands out, up
    to ``passes`` times (a strong line needs the depth of two notches; a second comb is taken on
    when it stands ``trigger_db`` out). Kept when the strongest
    notched line fell by ``GONE_DB`` or more; returns the audio (the input when not kept) and the
    record (None when nothing called for it)."""
    y = np.asarray(x, dtype=np.float32)
    h = spectrum.measure_hum(y[0], sample_rate)
    if h.f0_hz is None or h.peak_prominence_db < trigger_db:
        return y, None
    found = h.lines_hz
    lines = found
    left, level_after = np.zeros(len(found)), -120.0
    done = 0
    while done < passes and len(lines):
        y = notch_lines(y, sample_rate, lines, width_hz)
        done += 1
        # deepen the notches where a line still stands out; a second comb (another mains source)
        # is taken on only when it stands trigger_db out: a voice's 6 dB bumps are never chased
        left, level_after = spectrum.residual_lines(y[0], sample_rate, found)
        lines = found[left >= spectrum.MIN_LINE_DB]
        other = spectrum.measure_hum(y[0], sample_rate)
        if other.f0_hz is not None and other.peak_prominence_db >= trigger_db:
            new = np.array([f for f in other.lines_hz if np.min(np.abs(found - f)) > width_hz / 2])
            found, lines = np.concatenate([found, new]), np.concatenate([lines, new])
            left = np.concatenate([left, other.prominence_db[np.isin(other.freqs_hz, new)]])
    after = float(np.max(left)) if len(left) else 0.0
    kept = bool(after <= h.peak_prominence_db - GONE_DB and np.all(np.isfinite(y)))
    record = {
        "repair": "hum_notch",
        "before": round(h.peak_prominence_db, 1),
        "after": round(after, 1),
        "kept": kept,
        "hum_hz": round(float(h.f0_hz), 2),
        "lines": len(found),
        "passes": done,
        "level_before_db": round(h.level_db(spectrum.MIN_LINE_DB), 1),
        "level_after_db": round(level_after, 1),
    }
    return (y if kept else np.asarray(x, dtype=np.float32)), record


def denoise(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """noisereduce's stationary spectral gating (extra ``denoise``), 80 % reduction, per channel."""
    import noisereduce

    out = noisereduce.reduce_noise(y=np.asarray(x, dtype=np.float32), sr=sample_rate, stationary=True, prop_decrease=0.8)
    return np.asarray(out, dtype=np.float32).reshape(x.shape)


T = TypeVar("T")


GONE_DB = 6.0  # a notched line must fall this far for the hum repair to be kept


def _per_copy(measure: Callable[[np.ndarray], T]) -> Callable[[np.ndarray], T]:
    """``measure`` remembered per array (by identity): each analysis copy is measured once by
    every check that reads it (the copies are never written)."""
    seen: list[tuple[np.ndarray, T]] = []

    def once(y: np.ndarray) -> T:
        for array, value in seen:
            if array is y:
                return value
        value = measure(y)
        seen.append((y, value))
        return value

    return once


@register
@dataclass(frozen=True)
class Repair:
    """Fix DC offset, rumble, mains hum (and optionally noise) only when measured, keeping each fix
    only if re-measuring shows it helped. Records every attempt in ``info["repairs"]``.

    Each repair: measure channel 0; if over its trigger, apply to every channel; measure again;
    keep the result only if the measure improved by the stated margin and the SNR did not drop
    by more than 1 dB. Hum: notches at every measured line, re-measured and notched again up to
    ``hum_passes`` times, kept when the strongest line fell by 6 dB. Uses the clip's speech map
    (detects speech when it has none). Raises nothing.
    """

    name: ClassVar[str] = "repair"
    changes_audio: ClassVar[bool] = True
    needs: ClassVar[frozenset[Fact]] = frozenset()
    provides: ClassVar[frozenset[Fact]] = frozenset()

    dc: bool = option(True, "remove a DC offset larger than min_dc_offset")
    min_dc_offset: float = option(0.002, "DC offset (full scale 1) that calls for removal", min=0.0, max=0.5)
    highpass: bool = option(True, "high-pass at highpass_hz when rumble is over min_rumble_db")
    highpass_hz: float = option(70.0, "high-pass corner (Hz)", min=20.0, max=150.0)
    min_rumble_db: float = option(-30.0, "power under 60 Hz relative to the signal (dB) that calls for the high-pass", min=-90.0, max=0.0)
    hum: bool = option(
        True, "notch mains hum (every line of the measured comb, at its own frequency) when a line stands "
        "min_hum_prominence_db over its surroundings"
    )
    min_hum_prominence_db: float = option(10.0, "hum line prominence (dB) that calls for the notches", min=3.0, max=40.0)
    hum_notch_hz: float = option(3.0, "width of each hum notch (Hz)", min=0.5, max=10.0)
    hum_passes: int = option(3, "notch, re-measure and notch what still stands out, at most this many times", min=1, max=5)
    denoise: bool = option(False, "spectral-gating denoiser (extra `denoise`: noisereduce) when SNR < denoise_below_snr_db")
    denoise_below_snr_db: float = option(20.0, "SNR (dB) under which the denoiser is tried", min=0.0, max=60.0)
    denoise_min_gain_db: float = option(3.0, "keep the denoised audio only if the SNR rose by at least this (dB)", min=0.0, max=30.0)

    def __post_init__(self) -> None:
        if self.denoise and importlib.util.find_spec("noisereduce") is None:
            raise ValueError("denoise needs the optional extra: pip install 'voiceprep[denoise]'")

    def __call__(self, clip: Clip) -> Clip:
        segs = speech_segments(clip)
        rate = clip.sample_rate
        x = np.asarray(clip.samples, dtype=np.float32)
        records: list[dict[str, Any]] = []

        def analysed(y: np.ndarray) -> np.ndarray:
            """Channel 0 at the analysis rate: every measure below reads this (resampled from
            float32 as it is: no float64 round trip before soxr)."""
            return frames.to_rate(y[0] if y.ndim == 2 else y, rate)

        x16 = analysed(x)

        snr = _per_copy(lambda y16: noise.snr_estimate(y16, frames.ANALYSIS_RATE, segs)[0])
        rumble = _per_copy(lambda y16: spectrum.rumble_db(y16, frames.ANALYSIS_RATE))

        def attempt(
            name: str, measure: Callable[[np.ndarray], float], fix: Callable[[np.ndarray], np.ndarray], margin: float
        ) -> None:
            nonlocal x, x16
            before = measure(x16)
            y = fix(x)
            y16 = analysed(y)
            after = measure(y16)
            snr_ok = snr(y16) >= snr(x16) - 1.0
            kept = bool(after <= before - margin and snr_ok and np.all(np.isfinite(y)))
            records.append({"repair": name, "before": round(before, 4), "after": round(after, 4), "kept": kept})
            if kept:
                x, x16 = y, y16

        mono = frames.as_mono(x)
        if self.dc and abs(noise.dc_offset(mono)) > self.min_dc_offset:
            # judged on the analysis copy: resampling keeps a DC offset as it is
            attempt(
                "dc",
                lambda y16: abs(noise.dc_offset(y16)),
                lambda y: remove_dc(y, rate),
                self.min_dc_offset / 2,
            )
        if self.highpass and rumble(x16) > self.min_rumble_db:
            attempt(
                "highpass",
                rumble,
                lambda y: highpass(y, rate, self.highpass_hz),
                3.0,
            )
        if self.hum and x.shape[-1] >= spectrum.HUM_MIN_S * rate:  # shorter: a voice can pass for a line
            y, record = remove_hum(
                x, rate, trigger_db=self.min_hum_prominence_db, width_hz=self.hum_notch_hz, passes=self.hum_passes
            )
            if record is not None:
                records.append(record)
                if record["kept"]:
                    x, x16 = y, analysed(y)
        if self.denoise and snr(x16) < self.denoise_below_snr_db:
            attempt("denoise", lambda y16: -snr(y16), lambda y: denoise(y, rate), self.denoise_min_gain_db)
        if not records:
            return clip
        out = clip.replace(samples=x) if any(r["kept"] for r in records) else clip
        return out.measured(repairs=[*clip.metrics.get("repairs", []), *records])
