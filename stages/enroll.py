"""enroll: upload the clip's WAV and create a CosyVoice voice from it (the one networked stage)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pipeline.clip import Clip, Fact
from pipeline.errors import ConfigError, PipelineError
from pipeline.registry import register
from pipeline.service.settings import EnrollSettings, check_prefix, check_target_model
from pipeline.stage import option, section

if TYPE_CHECKING:
    from pipeline.service.enroll import Enroller


@register
@dataclass(frozen=True)
class Enroll:
    """Create a CosyVoice voice from the clip's encoded WAV; adds ``metrics["enrollment"]``.

    Needs DASHSCOPE_API_KEY. Upload method, ledger, retries come from pipeline.yaml's `enroll:`
    section, given to the stage when the chain is built. The ledger makes it idempotent: the same
    audio is never enrolled twice, also by other processes sharing it (claims on its rows, one
    rate limit kept in it). In a batch it runs in the coordinating process, after the workers,
    with one client for all files. Raises the service's codes
    (Audio.*, Throttling.AllocationQuota, InvalidApiKey...) and VoiceUndeployed.
    """

    name: ClassVar[str] = "enroll"
    changes_audio: ClassVar[bool] = False
    needs: ClassVar[frozenset[Fact]] = frozenset({"encoded"})
    provides: ClassVar[frozenset[Fact]] = frozenset()
    contract_needs_service: ClassVar[bool] = True  # the stage contract test skips calling it

    prefix: str = option("", "voice id prefix, 1-10 lowercase letters or digits ('' = enroll.prefix)")
    target_model: str = option("", "TTS model the voice is for, e.g. cosyvoice-v2 ('' = enroll.target_model)")
    wait: bool = option(True, "wait until the service has reviewed the voice (OK or UNDEPLOYED)")
    ledger: str = option("", "SQLite ledger path ('' = enroll.ledger, else voiceprep-ledger.sqlite here)")
    settings: EnrollSettings = section("enroll", EnrollSettings, "the `enroll:` section of pipeline.yaml")

    def __post_init__(self) -> None:
        try:
            if self.prefix:
                check_prefix(self.prefix)
            if self.target_model:
                check_target_model(self.target_model)
        except ConfigError as exc:
            raise ValueError(exc.message) from None

    @contextlib.contextmanager
    def open(self, enroller: Enroller | None = None) -> Iterator[Callable[[Clip], Clip]]:
        """The stage with its client and ledger open, for a whole batch (``enroller``: one made
        elsewhere, e.g. with a test transport; closed here all the same)."""
        from pipeline.service.enroll import close_enroller, make_enroller

        if enroller is None:
            enroller = make_enroller(
                self.settings,
                prefix=self.prefix or None,
                target_model=self.target_model or None,
                wait=self.wait,
                ledger=self.ledger or None,
            )
        try:
            yield functools.partial(_enroll, enroller)
        finally:
            close_enroller(enroller)

    def __call__(self, clip: Clip) -> Clip:
        with self.open() as enroll:
            return enroll(clip)


def _enroll(enroller: Enroller, clip: Clip) -> Clip:
    if clip.encoded is None:
        raise ValueError("enroll needs the encoded WAV: put it after `encode`")
    result = enroller.enroll_bytes(clip.encoded, source=clip.source.path, filename=Path(clip.source.path).stem + ".wav")
    if result.status != "ok":
        raise PipelineError(
            result.code or "Unknown", result.message, hint=result.hint, metrics={"enrollment": result.as_dict()}
        )
    return clip.measured(enrollment=result.as_dict())
