"""enroll: upload the clip as 16-bit WAV and create a CosyVoice voice from it (the one networked stage)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from pipeline.clip import Clip
from pipeline.errors import ConfigError, PipelineError
from pipeline.registry import register
from pipeline.stage import option


def encode_wav16(samples: np.ndarray, sample_rate: int) -> bytes:
    """Float ``(channels, frames)`` as 16-bit PCM WAV bytes, exactly as ``audio_io.write_wav_atomic``
    writes them (same rounding, same header), so the ledger's hash of a written file matches."""
    import soundfile as sf

    pcm = np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    buf = io.BytesIO()
    sf.write(buf, np.atleast_2d(pcm).T, sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


@register
@dataclass(frozen=True)
class Enroll:
    """Create a CosyVoice voice from the clip (uploaded as 16-bit WAV); adds ``info["enrollment"]``.

    Needs DASHSCOPE_API_KEY. Upload method, ledger, retries come from pipeline.yaml's `enroll:`
    section. The ledger makes it idempotent: the same audio is never enrolled twice. Raises the
    service's codes (Audio.*, Throttling.AllocationQuota, InvalidApiKey...) and VoiceUndeployed.
    """

    name: ClassVar[str] = "enroll"
    changes_audio: ClassVar[bool] = False
    contract_needs_service: ClassVar[bool] = True  # the stage contract test skips calling it

    prefix: str = option("", "voice id prefix, 1-10 lowercase letters or digits ('' = enroll.prefix)")
    target_model: str = option("", "TTS model the voice is for, e.g. cosyvoice-v2 ('' = enroll.target_model)")
    wait: bool = option(True, "wait until the service has reviewed the voice (OK or UNDEPLOYED)")
    ledger: str = option("", "SQLite ledger path ('' = enroll.ledger, else voiceprep-ledger.sqlite here)")

    def __post_init__(self) -> None:
        from pipeline.service.settings import check_prefix, check_target_model

        try:
            if self.prefix:
                check_prefix(self.prefix)
            if self.target_model:
                check_target_model(self.target_model)
        except ConfigError as exc:
            raise ValueError(exc.message) from None

    def __call__(self, clip: Clip) -> Clip:
        from pipeline.service.enroll import active_settings, shared_enroller

        settings = active_settings()
        prefix = self.prefix or settings.prefix
        if not prefix:
            raise PipelineError(
                "InvalidParameter", "the enroll stage has no prefix",
                hint="set `prefix:` on the enroll stage or in the `enroll:` section of pipeline.yaml",
            )
        enroller = shared_enroller(
            prefix=prefix,
            target_model=self.target_model or settings.target_model,
            wait=self.wait,
            ledger=self.ledger or None,
        )
        data = encode_wav16(clip.samples, clip.sample_rate)
        result = enroller.enroll_bytes(data, source=clip.source.path, filename=Path(clip.source.path).stem + ".wav")
        if result.status != "ok":
            raise PipelineError(
                result.code or "Unknown", result.message, hint=result.hint, metrics={"enrollment": result.as_dict()}
            )
        return clip.with_info(enrollment=result.as_dict())
