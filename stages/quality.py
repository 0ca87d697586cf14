"""quality: measure noise, clipping, loudness steadiness, hum, bandwidth, music and extra voices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pipeline.clip import Clip, Fact
from pipeline.errors import service_error
from pipeline.measures.dnsmos import dnsmos
from pipeline.measures.frames import as_mono, to_rate
from pipeline.measures.spectrum import HUM_MIN_S
from pipeline.measures.summary import measure
from pipeline.registry import register
from pipeline.speech import segments_of as speech_segments
from pipeline.stage import option


def _fmt_rate(hz: float) -> str:
    return f"{hz / 1000:g} kHz"


@register
@dataclass(frozen=True)
class Quality:
    """Predict the service's noisy/fluctuating refusals and say how to fix them (channel 1 judged).

    Measures SNR (dB, with or without pauses), clipping, short-term loudness spread (LU), DC
    offset, mains hum (a comb of lines), effective bandwidth (Hz), music in the pauses and a second
    voice (voice embeddings); adds them to ``info["metrics"]``.
    Raises InternalError ("audio preprocess server error") when the clip is likely refused as
    noisy or fluctuating; warns otherwise: low_snr, clipping, unsteady_loudness, hum,
    narrowband, music_bed, multiple_speakers, dc_offset.
    """

    name: ClassVar[str] = "quality"
    changes_audio: ClassVar[bool] = False
    needs: ClassVar[frozenset[Fact]] = frozenset()
    provides: ClassVar[frozenset[Fact]] = frozenset()

    min_snr_db: float = option(20.0, "warn (low_snr) when the speech-to-noise ratio is under this (dB)", min=0.0, max=60.0)
    refuse_snr_db: float = option(10.0, "refuse (InternalError) when the SNR is under this (dB)", min=0.0, max=60.0)
    max_clipped_ratio: float = option(1e-4, "warn (clipping) when more than this share of samples sit on flat tops", min=0.0, max=0.1)
    max_loudness_spread_lu: float = option(
        12.0, "warn (unsteady_loudness) when 1 s loudness over speech spreads (P95-P10) more than this (LU)", above=0.0, max=40.0,
    )
    refuse_loudness_spread_lu: float = option(18.0, "refuse (InternalError) when the loudness spread is over this (LU)", above=0.0, max=60.0)
    min_hum_prominence_db: float = option(
        10.0, "a mains line (fundamental 45-65 Hz or a harmonic) this far (dB) over its surroundings is hum", min=3.0, max=40.0,
    )
    max_hum_db: float = option(
        -50.0, "warn (hum) when the hum lines' power relative to the whole signal is over this (dB); not under 5 s of audio", min=-90.0, max=0.0,
    )
    min_bandwidth_hz: float = option(6000.0, "warn (narrowband) when the speech holds nothing above this (Hz)", min=1000.0, max=24000.0)
    max_music_share: float = option(
        0.2, "music_bed when held tones sound in more than this share of the pauses (0-1); refused if SNR < min_snr_db", min=0.0, max=1.0,
    )
    max_voice_distance: float = option(
        0.2, "warn (multiple_speakers) when the cosine distance between the two voice groups (0-2) is over this", above=0.0, max=2.0,
    )
    max_dc_offset: float = option(0.02, "warn (dc_offset) when the mean sample is further than this from 0 (full scale 1)", min=0.0, max=0.5)
    dnsmos: bool = option(False, "also score DNSMOS (needs the `dnsmos` extra; seconds per clip: docs/quality.md)")

    def __post_init__(self) -> None:
        if self.refuse_snr_db > self.min_snr_db:
            raise ValueError("refuse_snr_db must not exceed min_snr_db")
        if self.refuse_loudness_spread_lu < self.max_loudness_spread_lu:
            raise ValueError("refuse_loudness_spread_lu must not be under max_loudness_spread_lu")

    def findings(
        self, m: dict[str, Any], source_rate: int, duration_s: float
    ) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
        """``(warnings, refusals)``: ``(code, message, hint)`` and ``(message, hint)`` from the metrics
        of a clip of ``duration_s`` seconds stored at ``source_rate``."""
        warn: list[tuple[str, str, str]] = []
        refuse: list[tuple[str, str]] = []
        snr = m["snr_db"]
        noise_hint = "record closer to the microphone, away from fans, traffic and other voices"
        if snr < self.min_snr_db:
            msg = f"background noise: SNR {snr:.0f} dB, aim for more than {self.min_snr_db:.0f} dB"
            (refuse.append((msg, noise_hint)) if snr < self.refuse_snr_db else warn.append(("low_snr", msg, noise_hint)))
        music = m["music_share"]
        if music is not None and music > self.max_music_share:
            msg = f"music under the speech: held notes in {100 * music:.0f} % of the pauses"
            hint = "turn the music off and record again; the service refuses speech over music"
            (refuse.append((msg, hint)) if snr < self.min_snr_db else warn.append(("music_bed", msg, hint)))
        spread = m["loudness_spread_lu"]
        if spread > self.max_loudness_spread_lu:
            msg = (
                f"volume goes up and down: loudness spreads over {spread:.0f} LU "
                f"(trend {m['loudness_trend_lu_per_10s']:+.0f} LU per 10 s), aim for under {self.max_loudness_spread_lu:.0f} LU"
            )
            hint = "keep a steady distance from the microphone and a steady voice; switch off automatic gain"
            (refuse.append((msg, hint)) if spread > self.refuse_loudness_spread_lu else warn.append(
                ("unsteady_loudness", msg, hint)
            ))
        if m["clipped_ratio"] > self.max_clipped_ratio:
            warn.append((
                "clipping",
                f"clipping: {100 * m['clipped_ratio']:.2f} % of samples on flat tops (longest {m['clipped_run_ms']:.1f} ms)",
                "lower the recording gain so that peaks stay under -3 dBFS and record again; clipping cannot be undone",
            ))
        if (
            duration_s >= HUM_MIN_S
            and m["hum_hz"] is not None
            and m["hum_prominence_db"] >= self.min_hum_prominence_db
            and m["hum_db"] > self.max_hum_db
        ):
            warn.append((
                "hum",
                f"mains hum at {m['hum_hz']:.1f} Hz ({m['hum_lines']} line{'' if m['hum_lines'] == 1 else 's'}, the strongest "
                f"{m['hum_prominence_db']:.0f} dB over its surroundings), {-m['hum_db']:.0f} dB under the signal",
                "use a battery-powered or USB microphone away from power supplies; `voiceprep run` notches it out",
            ))
        nyquist = source_rate / 2
        if m["bandwidth_hz"] < self.min_bandwidth_hz and m["bandwidth_hz"] < 0.8 * nyquist:
            warn.append((
                "narrowband",
                f"nothing above {_fmt_rate(m['bandwidth_hz'])} though stored at {_fmt_rate(source_rate)}: "
                "a phone-quality or low-rate recording, resampled",
                "record again at 16 kHz or more; resampling cannot restore the lost treble and the clone will sound muffled",
            ))
        distance = m["voice_distance"]
        if distance is not None and distance > self.max_voice_distance:
            a, b = m["voice_groups_s"]
            warn.append((
                "multiple_speakers",
                f"two voices: about {a:.0f} s and {b:.0f} s of speech sound like different people "
                f"(voice distance {distance:.2f}, over {self.max_voice_distance:.2f})",
                "keep only one person's voice in the clip",
            ))
        if abs(m["dc_offset"]) > self.max_dc_offset:
            warn.append((
                "dc_offset",
                f"DC offset of {m['dc_offset']:+.3f} (full scale 1)",
                "`voiceprep run` removes it; a faulty sound card or microphone preamp causes it",
            ))
        return warn, refuse

    def __call__(self, clip: Clip) -> Clip:
        segs = speech_segments(clip)
        q = measure(clip.samples[0], clip.sample_rate, segs)
        if self.dnsmos:
            q.update(dnsmos(to_rate(as_mono(clip.samples[0]), clip.sample_rate)))
        warn, refuse = self.findings(q, clip.source.sample_rate, clip.samples.shape[-1] / clip.sample_rate)
        metrics = {**clip.metrics, **q}
        metrics["quality_warnings"] = [c for c, _, _ in warn]
        if refuse:
            message = "; ".join(msg for msg, _ in refuse) + " (the service answers \"audio preprocess server error\")"
            hint = "; ".join(dict.fromkeys(h for _, h in refuse))
            raise service_error("InternalError", message, hint=hint, metrics=metrics)
        out = clip.replace(metrics=metrics)
        for code, msg, hint in warn:
            out = out.warn(code, msg, hint)
        return out
