"""Decode any recording by its content (not its name), in blocks, into a Clip.

soundfile (libsndfile) reads WAV/RF64/FLAC/OGG/AIFF/MP3 quickly; PyAV (FFmpeg, bundled in the
wheel) reads everything else (M4A/AAC, MP4/MOV, WebM/Matroska, Opus, ...). Decoding is chunked:
blocks are downmixed/selected and resampled with soxr as they arrive, so a long input is never
held whole at its full rate. Every low-level failure becomes ``Audio.DecoderError``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from . import limits
from .clip import Clip, SourceInfo
from .errors import PipelineError, service_error

BLOCK_S = 10.0  # decode block length (seconds at the source rate)
BLOCK_SAMPLES = 16_000_000  # ... and at most this many samples over all channels (64 MB as float32)
PREALLOC_S = 600.0  # decode() sizes its buffer from the header up to this length (seconds)

_SF_KINDS = {"wav", "rf64", "flac", "ogg", "aiff", "mp3"}

# libsndfile subtype -> (codec name, bit depth)
_SF_SUBTYPES: dict[str, tuple[str, int | None]] = {
    "PCM_U8": ("pcm_u8", 8),
    "PCM_S8": ("pcm_s8", 8),
    "PCM_16": ("pcm_s16le", 16),
    "PCM_24": ("pcm_s24le", 24),
    "PCM_32": ("pcm_s32le", 32),
    "FLOAT": ("pcm_f32le", 32),
    "DOUBLE": ("pcm_f64le", 64),
    "ULAW": ("pcm_mulaw", 8),
    "ALAW": ("pcm_alaw", 8),
    "IMA_ADPCM": ("adpcm_ima_wav", 4),
    "MS_ADPCM": ("adpcm_ms", 4),
    "GSM610": ("gsm_ms", None),
    "VORBIS": ("vorbis", None),
    "OPUS": ("opus", None),
    "MPEG_LAYER_III": ("mp3", None),
    "MPEG_LAYER_II": ("mp2", None),
    "MPEG_LAYER_I": ("mp1", None),
}

_AV_CONTAINERS = {
    "mov,mp4,m4a,3gp,3g2,mj2": "mp4",
    "matroska,webm": "webm",
    "mp3": "mp3",
    "ogg": "ogg",
    "wav": "wav",
    "flac": "flac",
    "aiff": "aiff",
    "aac": "aac",
    "w64": "w64",
    "caf": "caf",
}


def sniff(head: bytes) -> str:
    """The container named by a file's first bytes: wav, rf64, mp3, mp4, webm, flac, ogg, aiff, aac or unknown."""
    if len(head) >= 12 and head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
        return "wav"
    if len(head) >= 12 and head[:4] in (b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return "rf64"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if len(head) >= 12 and head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if len(head) >= 8 and head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if head[:3] == b"ID3":
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF:
        if (head[1] & 0xF6) == 0xF0:  # ADTS sync, layer 00
            return "aac"
        if (head[1] & 0xE0) == 0xE0 and (head[1] & 0x06) != 0:  # MPEG audio frame sync, layer I-III
            return "mp3"
    return "unknown"


def decoder_error(path: str, message: str, hint: str | None = None) -> PipelineError:
    return service_error("Audio.DecoderError", message, hint=hint, source=path)


def _block_frames(rate: int, channels: int) -> int:
    return max(1, min(int(BLOCK_S * rate), BLOCK_SAMPLES // max(channels, 1)))


def _riff_chunks(fh: Any, size: int) -> Iterator[tuple[bytes, int, int]]:
    """(id, declared size, offset of the body) of each chunk after the 12-byte RIFF header of
    the file open at ``fh`` (``size`` bytes long), in file order."""
    import struct

    pos = 12
    while pos + 8 <= size:
        fh.seek(pos)
        head = fh.read(8)
        if len(head) < 8:
            return
        cid, csize = struct.unpack("<4sI", head)
        yield cid, csize, pos + 8
        pos += 8 + csize + (csize & 1)


def _wav_truncation(path: str, size: int) -> tuple[float, float] | None:
    """(declared, present) data bytes when a RIFF/WAVE file's data chunk is cut short, else None."""
    try:
        with open(path, "rb") as fh:
            if fh.read(12)[8:12] != b"WAVE":
                return None
            for cid, csize, body in _riff_chunks(fh, size):
                if cid == b"data":
                    present = size - body
                    if csize in (0, 0xFFFFFFFF) or present >= csize:
                        return None
                    return float(csize), float(present)
    except OSError:
        return None
    return None


def _probe_soundfile(path: str, kind: str, size: int) -> SourceInfo | None:
    import soundfile as sf

    try:
        info = sf.info(os.fsencode(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, MemoryError, OverflowError):
        return None
    if info.frames <= 0 or info.samplerate <= 0:
        return None
    codec, depth = _SF_SUBTYPES.get(info.subtype, (info.subtype.lower(), None))
    container = kind if kind in _SF_KINDS else info.format.lower()
    if container == "flac":
        codec = "flac"
    elif container == "aiff" and codec.endswith("le"):
        codec = codec[:-2] + "be"
    return SourceInfo(
        path=path,
        container=container,
        codec=codec,
        bit_depth=depth,
        channels=int(info.channels),
        sample_rate=int(info.samplerate),
        duration_s=float(info.frames) / float(info.samplerate),
        size_bytes=size,
    )


def _probe_av(path: str, size: int) -> SourceInfo:
    import av

    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise decoder_error(
                    path, "no audio track found", "is this a video without sound, or not a media file?"
                )
            stream = container.streams.audio[0]
            ctx = stream.codec_context
            if ctx is None:  # FFmpeg found a stream it cannot identify (format tag 0xFFFF, 0 bits, ...)
                raise decoder_error(path, "the audio track's codec is unknown or its header is damaged")
            rate = int(ctx.sample_rate or stream.rate or 0)
            channels = int(ctx.channels or 0)
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            else:
                duration = 0.0
            fmt = container.format.name
            codec = ctx.name
            depth = None
            if codec.startswith("pcm_"):
                depth = int(ctx.format.bits) if ctx.format is not None else None
    except PipelineError:
        raise
    except (av.FFmpegError, ValueError, OSError, MemoryError, OverflowError, ZeroDivisionError) as exc:
        raise decoder_error(path, f"not a readable audio file ({limits.plain_error(exc, path)})") from None
    return SourceInfo(
        path=path,
        container=_AV_CONTAINERS.get(fmt, fmt.split(",")[0]),
        codec=codec,
        bit_depth=depth,
        channels=channels,
        sample_rate=rate,
        duration_s=max(duration, 0.0),
        size_bytes=size,
    )


def probe(path: str | os.PathLike[str]) -> SourceInfo:
    """The source's facts (container, codec, bit depth, channels, rate, duration, size), by content.

    Special files, and headers outside ``pipeline.limits`` (rates far under 16 kHz, absurd
    channel counts, more audio than the file can hold), are refused here, before decoding.
    """
    info = _probe(os.fspath(path))
    limits.admit(info)
    return info


def _probe(p: str) -> SourceInfo:
    head, size = limits.read_head(p)
    kind = sniff(head)
    if kind in _SF_KINDS:
        info = _probe_soundfile(p, kind, size)
        if info is not None:
            cut = _wav_truncation(p, size) if kind == "wav" else None
            if cut is not None and cut[1] < 0.99 * cut[0]:
                ratio = cut[0] / max(cut[1], 1.0)
                raise decoder_error(
                    p,
                    f"truncated: the header declares {info.duration_s * ratio:.1f} s of audio, "
                    f"the file holds {info.duration_s:.1f} s",
                    "the file was cut off while copying or recording; copy or export it again",
                )
            return info
    return _probe_av(p, size)


def _blocks_soundfile(path: str, info: SourceInfo, start: int, stop: int | None) -> Iterator[np.ndarray]:
    import soundfile as sf

    block = _block_frames(info.sample_rate, info.channels)
    with sf.SoundFile(os.fsencode(path)) as f:
        if start:
            f.seek(start)
        pos = start
        while stop is None or pos < stop:
            n = block if stop is None else min(block, stop - pos)
            data = f.read(n, dtype="float32", always_2d=True)
            if data.shape[0] == 0:
                break
            pos += data.shape[0]
            yield data.T


def _blocks_av(path: str, info: SourceInfo, start: int, stop: int | None) -> Iterator[np.ndarray]:
    import av

    sr = info.sample_rate
    with av.open(path) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout=stream.codec_context.layout, rate=sr)
        pos: int | None = None  # from the first frame's timestamp (codec priming can make it negative)
        # MP3 frame timestamps ignore the encoder delay that the decoder trims: decode MP3 from the
        # start (it is fast) and count samples; other codecs seek and read their place from timestamps
        seekable = info.codec != "mp3"
        if start > 0 and seekable and stream.time_base is not None:
            # jump near the start (keyframe before it), then find our place from the frames' timestamps
            container.seek(max(int((start / sr - 1.0) / stream.time_base), 0), stream=stream, backward=True)
        pending: list[np.ndarray] = []
        pending_n = 0
        block = _block_frames(sr, info.channels)

        tb = stream.time_base
        layout_name = stream.codec_context.layout.name
        need_time = seekable and start > 0  # after a seek our place comes from the timestamps

        def planar(frame: Any) -> np.ndarray:
            """Float planar frames (what MP3, AAC, Vorbis and Opus decoders give) read straight
            from their planes; anything else goes through libswresample."""
            n = frame.samples
            planes = frame.planes
            out = np.empty((len(planes), n), dtype=np.float32)
            for i, plane in enumerate(planes):
                out[i] = np.frombuffer(plane, dtype=np.float32, count=n)
            return out

        def frames() -> Iterator[tuple[int | None, np.ndarray]]:
            first = True
            direct_kind: tuple[str, int, str] | None = None  # the (format, rate, layout) read directly
            # Without a seek, only the first frame's timestamp matters: later frames are gathered
            # in an AudioFifo (C) and read out a second at a time, not one small array per frame.
            fifo = None if need_time else av.AudioFifo()
            chunk = max(sr, 1)
            for packet in container.demux(stream):
                for frame in packet.decode():
                    t = None
                    if (first or need_time) and frame.pts is not None and tb is not None:
                        t = (2 * frame.pts * tb.numerator * sr + tb.denominator) // (2 * tb.denominator)
                    if first:
                        kind = (frame.format.name, frame.sample_rate, frame.layout.name)
                        direct_kind = kind if kind == ("fltp", sr, layout_name) else None
                        first = False
                        if direct_kind is not None:
                            yield t, planar(frame)
                            continue
                    if direct_kind is not None and frame.sample_rate == sr:
                        if fifo is None:
                            yield t, planar(frame)
                        else:
                            frame.pts = None
                            fifo.write(frame)
                            if fifo.samples >= chunk:
                                yield None, planar(fifo.read())
                        continue
                    for out in resampler.resample(frame):
                        yield t, out.to_ndarray()
                        t = None
            if fifo is not None and fifo.samples:
                yield None, planar(fifo.read())
            for out in resampler.resample(None):
                yield None, out.to_ndarray()

        for t, arr in frames():
            if arr.shape[0] != info.channels:
                arr = np.asarray(arr, dtype=np.float32).reshape(info.channels, -1)
            if pos is None:
                pos = t if (t is not None and seekable) else 0
            elif t is not None and seekable and start > 0 and abs(t - pos) > sr // 10:
                pos = t  # trust the timestamps after a seek
            n = arr.shape[1]
            lo, hi = pos, pos + n
            pos = hi
            if hi <= start:
                continue
            if stop is not None and lo >= stop:
                break
            a = max(start - lo, 0)
            b = n if stop is None else min(n, stop - lo)
            pending.append(arr[:, a:b])
            pending_n += b - a
            if pending_n >= block:
                yield np.concatenate(pending, axis=1)
                pending, pending_n = [], 0
        if pending:
            yield np.concatenate(pending, axis=1)


def iter_blocks(
    info: SourceInfo,
    *,
    rate: int | None = None,
    first_channel: bool = False,
    start_s: float = 0.0,
    end_s: float | None = None,
    quality: str = "HQ",
) -> Iterator[np.ndarray]:
    """Decoded float32 ``(channels, n)`` blocks of ``info.path`` between ``start_s`` and ``end_s``.

    ``rate`` resamples (soxr, streaming, at soxr ``quality``) as blocks arrive; ``first_channel``
    keeps channel 0 only, as the service does. Raises ``Audio.DecoderError`` on any decoding failure.
    """
    path = info.path
    sr = info.sample_rate
    start = max(int(round(start_s * sr)), 0)
    stop = None if end_s is None else max(int(round(end_s * sr)), start)
    # libsndfile's MP3 seeking is approximate and noisy on stderr: PyAV decodes MP3 exactly
    use_sf = info.container in _SF_KINDS and info.codec not in ("aac", "mp3")
    if use_sf:
        raw: Iterator[np.ndarray] = _blocks_soundfile(path, info, start, stop)
    else:
        raw = _blocks_av(path, info, start, stop)
    resampler: Any = None
    if rate is not None and rate != sr:
        import soxr

        resampler = soxr.ResampleStream(
            sr, rate, 1 if first_channel else info.channels, dtype="float32", quality=quality
        )
    try:
        for block in _guard(info, raw):
            if first_channel:
                block = block[:1]
            if resampler is not None:
                out = resampler.resample_chunk(np.ascontiguousarray(block.T))
                if out.size:
                    yield np.ascontiguousarray(out.T)
            else:
                yield block
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros((0, 1 if first_channel else info.channels), np.float32), last=True)
            if tail.size:
                yield np.ascontiguousarray(tail.T)
    finally:
        with contextlib.suppress(Exception):
            raw.close()  # type: ignore[attr-defined]


def _guard(info: SourceInfo, blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """Translate libsndfile / FFmpeg failures into Audio.DecoderError at one boundary, and stop
    a decode that produces more audio than the file can hold (``limits.frame_budget``)."""
    # only files that went through libsndfile or PyAV can raise their errors
    sf, av = sys.modules.get("soundfile"), sys.modules.get("av")
    caught: tuple[type[BaseException], ...] = (
        RuntimeError,  # libsndfile's errors derive from it
        ValueError,
        EOFError,
        OSError,
        MemoryError,  # a header that asks for an absurd buffer
        OverflowError,
        ZeroDivisionError,
        *((sf.LibsndfileError,) if sf is not None else ()),
        *((av.FFmpegError,) if av is not None else ()),
    )
    budget = limits.frame_budget(info)
    frames = 0
    try:
        for block in blocks:
            frames += block.shape[-1]
            if frames > budget:
                raise limits.over_budget(info, frames)
            yield block
    except caught as exc:
        raise decoder_error(info.path, f"decoding failed ({limits.plain_error(exc, info.path)})") from None


def decode(
    path: str | os.PathLike[str] | SourceInfo,
    *,
    rate: int | None = None,
    first_channel: bool = False,
    start_s: float = 0.0,
    end_s: float | None = None,
) -> Clip:
    """Decode (a part of) a file into a Clip at ``rate`` (native when None).

    The output buffer is allocated once from the probed duration, so peak memory is the size of
    the result plus one block, not the whole file at its source rate.
    """
    info = path if isinstance(path, SourceInfo) else probe(path)
    out_rate = rate or info.sample_rate
    channels = 1 if first_channel else info.channels
    end = info.duration_s if end_s is None else min(end_s, info.duration_s) if info.duration_s > 0 else end_s
    expect = int(max((end or 0.0) - start_s, 0.0) * out_rate) + out_rate  # one second of slack
    # a header is not trusted with memory: longer audio grows the buffer as it arrives
    expect = min(expect, int(PREALLOC_S * out_rate))
    buf = np.empty((channels, max(expect, 1)), dtype=np.float32)
    n = 0
    for block in iter_blocks(info, rate=rate, first_channel=first_channel, start_s=start_s, end_s=end_s):
        k = block.shape[1]
        if n + k > buf.shape[1]:
            grown = np.empty((channels, max(buf.shape[1] * 2, n + k)), dtype=np.float32)
            grown[:, :n] = buf[:, :n]
            buf = grown
        buf[:, n : n + k] = block
        n += k
    if n == 0:
        raise decoder_error(info.path, "no audio could be decoded from the file", "export the recording again")
    # A view when the estimate held (the one second of slack is not worth a second full copy);
    # a copy only when the probed duration overestimated the audio by much.
    samples = buf[:, :n] if n >= 0.9 * buf.shape[1] else buf[:, :n].copy()
    if not np.all(np.isfinite(samples)):
        samples = np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)
    samples.setflags(write=False)  # nothing else holds `buf`: the clip can keep the view, uncopied
    del buf
    declared = info.duration_s - start_s if end_s is None else None
    got = n / out_rate
    if declared is not None and declared > 1.0 and got < 0.5 * declared:
        raise decoder_error(
            info.path,
            f"truncated: the header declares {declared:.1f} s but only {got:.1f} s decode",
            "the file was cut off while copying or recording; export it again",
        )
    if end_s is None and start_s == 0.0:
        info = dataclasses.replace(info, duration_s=got)
    return Clip(samples=samples, sample_rate=out_rate, source=info, offset_s=start_s)
