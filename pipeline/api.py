"""The library API: check a file exactly as the service would judge it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from .clip import Clip, SourceInfo, SpeechMap, WholeSource
from .config import Config, load
from .errors import PipelineError
from .verdict import Verdict

ANALYSIS_RATE = 16000
STREAM_CHECK_S = 120.0  # longer inputs are judged in blocks, never held whole (seconds)
SPEECH_CODES = frozenset({"Audio.AudioSilentError", "Audio.AudioShortError"})  # too little speech heard


def check(path: str | os.PathLike[str], config: Config | None = None, *, plot: bool = False) -> Verdict:
    """The service's verdict on ``path`` as it would be uploaded; never raises for a bad file.

    Decodes only the first channel (the one the service uses), at 16 kHz, then runs the
    config's ``check`` chain. When the first channel of a file of several is refused for too
    little speech, the other channels are judged too (only then), and a hint names the one that
    holds the voice. With ``plot``, the verdict also carries what the report page draws (the
    first channel's coarse waveform and its speech). Raises ConfigError only for a bad ``config``.
    """
    from . import audio_io
    from .report_page.envelope import EnvelopeBuilder

    cfg = config if config is not None else load(chains=("check",))
    p = os.fspath(path)
    env: EnvelopeBuilder | None = None
    duration = 0.0
    info: SourceInfo | None = None
    try:
        info = audio_io.probe(p)
        duration = info.duration_s
        rate = ANALYSIS_RATE if info.sample_rate > ANALYSIS_RATE else None
        if info.duration_s > STREAM_CHECK_S:
            env = EnvelopeBuilder(int(info.duration_s * (rate or info.sample_rate))) if plot else None
            clip = _streamed_clip(info, rate, cfg, env)
        else:
            clip = audio_io.decode(info, rate=rate, first_channel=True)
            if plot:
                env = EnvelopeBuilder(clip.frames)
                env.add(clip.samples[0])
        out = cfg.check(clip)
    except PipelineError as exc:
        if info is not None and exc.code in SPEECH_CODES and info.channels > 1 and info.duration_s <= STREAM_CHECK_S:
            exc = _voice_elsewhere(exc, info, cfg)
        return Verdict(
            path=p,
            ok=False,
            code=exc.code,
            message=exc.message,
            hint=exc.hint,
            stage=exc.stage,
            metrics=exc.metrics,
            plot=_plot(duration, env, exc.speech),
        )
    return Verdict(
        path=p,
        ok=True,
        metrics=dict(out.metrics),
        warnings=[w.as_dict() for w in out.warnings],
        plot=_plot(duration, env, out.speech),
    )


def _plot(duration_s: float, env: Any, speech: Any) -> dict[str, Any] | None:
    """The report page's data for a file judged as it is: its waveform and its speech."""
    if env is None:
        return None
    segments = speech.segments.round(3).tolist() if isinstance(speech, SpeechMap) else []
    return {"input_s": round(duration_s, 3), "input_env": env.values(), "speech": segments, "speech_span": None,
            "window": None, "pieces": [], "output_s": None, "output_env": None, "output_speech": []}


def _voice_elsewhere(exc: PipelineError, info: SourceInfo, cfg: Config) -> PipelineError:
    """``exc`` (the first channel refused for too little speech) with the hint naming the other
    channel with the most speech, when the chain up to the stage that refused passes on it;
    ``channel_speech_s`` lists every channel's speech. The hint is unchanged when no channel
    holds the voice."""
    from . import audio_io

    at = next((i for i, st in enumerate(cfg.check.stages) if st.name == exc.stage), None)
    if at is None:
        return exc
    head = cfg.check.stages[: at + 1]
    rate = ANALYSIS_RATE if info.sample_rate > ANALYSIS_RATE else None
    try:
        whole = audio_io.decode(info, rate=rate)
    except PipelineError:
        return exc
    speech_s: list[float] = [float(exc.metrics.get("speech_s", 0.0))]
    voiced: list[tuple[float, int]] = []
    for k in range(1, whole.channels):
        clip = whole.replace(samples=whole.samples[k : k + 1])
        try:
            for stage in head:
                clip = stage(clip)
        except PipelineError as other:
            speech_s.append(float(other.metrics.get("speech_s", 0.0)))
            continue
        speech_s.append(float(clip.metrics.get("speech_s", 0.0)))
        voiced.append((speech_s[-1], k + 1))
    metrics = {**exc.metrics, "channel_speech_s": [round(v, 3) for v in speech_s]}
    if not voiced:
        return _with(exc, exc.hint, metrics)
    seconds, channel = max(voiced)
    hint = (
        f"the voice is on channel {channel} ({seconds:.1f} s of speech there) but the service hears only the "
        "first channel: `voiceprep run` takes the channel that carries the voice (or move it to the first channel)"
    )
    return _with(exc, hint, metrics)


def _with(exc: PipelineError, hint: str, metrics: dict[str, Any]) -> PipelineError:
    """A copy of ``exc`` with this hint and these metrics."""
    return PipelineError(
        exc.code, exc.message, hint=hint, stage=exc.stage, source=exc.source, http_status=exc.http_status,
        metrics=metrics, speech=exc.speech,
    )


def _streamed_clip(info: SourceInfo, rate: int | None, cfg: Config, env: Any = None) -> Clip:
    """The first channel of a long input, decoded in blocks: speech is detected over the whole
    file as the blocks pass (with the settings of the chain's first stage that detects speech),
    the peak is tracked, and only the first ``STREAM_CHECK_S`` seconds are kept as the clip's
    samples; the whole-file measures travel as the clip's ``whole``, so memory stays flat however
    long the recording is. A check stage that reads samples sees the first two minutes (a file
    that long already fails the service's 60 s limit before speech is judged).
    """
    import dataclasses

    import numpy as np

    from . import audio_io, speech
    from .stage import DetectsSpeech

    settings = next((st for st in cfg.check.stages if isinstance(st, DetectsSpeech)), None)
    threshold = settings.vad_threshold if settings is not None else 0.5
    merge_gap = settings.merge_gap_s if settings is not None else 0.5
    out_rate = rate or info.sample_rate
    keep = int(STREAM_CHECK_S * out_rate)
    head: list[np.ndarray] = []
    held = 0
    peak = 0.0
    seen = 0

    def blocks() -> Iterator[np.ndarray]:
        nonlocal held, peak, seen
        for block in audio_io.iter_blocks(info, rate=rate, first_channel=True):
            x = np.nan_to_num(block[0], nan=0.0, posinf=1.0, neginf=-1.0)
            if env is not None:
                env.add(x)
            if held < keep:
                head.append(x[: keep - held].copy())
                held += len(head[-1])
            if len(x):
                peak = max(peak, float(np.max(np.abs(x))))
            seen += len(x)
            yield x if out_rate == speech.VAD_RATE else speech.to_vad_rate(x, out_rate)

    report = speech.detect_stream(blocks(), threshold=threshold, merge_gap_s=merge_gap)
    got = seen / out_rate
    if seen == 0:
        raise audio_io.decoder_error(info.path, "no audio could be decoded from the file", "export the recording again")
    if info.duration_s > 1.0 and got < 0.5 * info.duration_s:
        raise audio_io.decoder_error(
            info.path,
            f"truncated: the header declares {info.duration_s:.1f} s but only {got:.1f} s decode",
            "the file was cut off while copying or recording; export it again",
        )
    report = dataclasses.replace(report, duration_s=got)
    source = dataclasses.replace(info, duration_s=got)
    return Clip(
        samples=np.concatenate(head)[np.newaxis, :],
        sample_rate=out_rate,
        source=source,
        whole=WholeSource(speech=report, peak=peak),
    )
