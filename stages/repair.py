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


def notch_hum(x: np.ndarray, sample_rate: int, freq_hz: float, harmonics: int = 4, q_factor: float = 30.0) -> np.ndarray:
    """Zero-phase notches at ``freq_hz`` and its first ``harmonics`` multiples (bandwidth f/Q),
    run as one cascade of second-order sections forwards and backwards."""
    if x.shape[-1] < 64:
        return np.asarray(x, dtype=np.float32)
    sections = []
    for k in range(1, harmonics + 1):
        f = freq_hz * k
        if f >= 0.45 * sample_rate:
            break
        sections.append(notch(f, q_factor, sample_rate))
    if not sections:
        return np.asarray(x, dtype=np.float32)
    return np.asarray(sosfiltfilt(np.array(sections), x), dtype=np.float32)


def denoise(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """noisereduce's stationary spectral gating (extra ``denoise``), 80 % reduction, per channel."""
    import noisereduce

    out = noisereduce.reduce_noise(y=np.asarray(x, dtype=np.float32), sr=sample_rate, stationary=True, prop_decrease=0.8)
    return np.asarray(out, dtype=np.float32).reshape(x.shape)


T = TypeVar("T")


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
    by more than 1 dB. Uses the clip's speech map (detects speech when it has none). Raises nothing.
    """

    name: ClassVar[str] = "repair"
    changes_audio: ClassVar[bool] = True
    needs: ClassVar[frozenset[Fact]] = frozenset()
    provides: ClassVar[frozenset[Fact]] = frozenset()

    dc: bool = option(True, "remove a DC offset larger than min_dc_offset")
    min_dc_offset: float = option(0.002, "DC offset (full scale 1) that calls for removal")
    highpass: bool = option(True, "high-pass at highpass_hz when rumble is over min_rumble_db")
    highpass_hz: float = option(70.0, "high-pass corner (Hz)")
    min_rumble_db: float = option(-30.0, "power under 60 Hz relative to the signal (dB) that calls for the high-pass")
    hum: bool = option(True, "notch mains hum when a 50/60 Hz line stands min_hum_prominence_db over its surroundings")
    min_hum_prominence_db: float = option(10.0, "hum line prominence (dB) that calls for the notch")
    hum_harmonics: int = option(4, "notch the hum frequency and this many multiples in all")
    denoise: bool = option(False, "spectral-gating denoiser (extra `denoise`: noisereduce) when SNR < denoise_below_snr_db")
    denoise_below_snr_db: float = option(20.0, "SNR (dB) under which the denoiser is tried")
    denoise_min_gain_db: float = option(3.0, "keep the denoised audio only if the SNR rose by at least this (dB)")

    def __post_init__(self) -> None:
        if not 20.0 <= self.highpass_hz <= 150.0:
            raise ValueError("highpass_hz must be between 20 and 150")
        if not 1 <= self.hum_harmonics <= 10:
            raise ValueError("hum_harmonics must be between 1 and 10")
        if self.min_dc_offset < 0 or self.denoise_min_gain_db < 0:
            raise ValueError("min_dc_offset and denoise_min_gain_db must be >= 0")
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
        low = _per_copy(lambda y16: spectrum.low_spectrum(y16, frames.ANALYSIS_RATE))  # read by rumble and hum

        def rumble(y16: np.ndarray) -> float:
            return spectrum.rumble_db(y16, frames.ANALYSIS_RATE, spectrum=low(y16))

        def hum(y16: np.ndarray) -> tuple[float | None, float, float]:
            return spectrum.hum(y16, frames.ANALYSIS_RATE, spectrum=low(y16))

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
        hz, prominence, _ = hum(x16)
        if self.hum and hz is not None and prominence >= self.min_hum_prominence_db:
            base = hz

            def hum_prominence(y16: np.ndarray) -> float:
                f, p, _ = hum(y16)
                return p if f == base else min(p, 6.0)

            attempt("hum_notch", hum_prominence, lambda y: notch_hum(y, rate, base, self.hum_harmonics), 6.0)
        if self.denoise and snr(x16) < self.denoise_below_snr_db:
            attempt("denoise", lambda y16: -snr(y16), lambda y: denoise(y, rate), self.denoise_min_gain_db)
        if not records:
            return clip
        out = clip.replace(samples=x) if any(r["kept"] for r in records) else clip
        return out.measured(repairs=[*clip.metrics.get("repairs", []), *records])
