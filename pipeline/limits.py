"""Limits: the service's published rules on an upload, and what voiceprep refuses before or while decoding.

The service's limits (the first block) are shared by the stages that check them. Every input
limit after them is derived from those (docs/limits.md says why each exists): a header outside
them is refused before any audio is decoded, and a decode is stopped as soon as it produces more
audio than the file could hold, so no header can make decoding run unbounded.
"""

from __future__ import annotations

import errno
import os
import re
import stat

from .clip import SourceInfo
from .errors import PipelineError, service_error

MAX_FILE_BYTES = 10_000_000  # "10 MB": the decimal reading is the safe one (between 10^7 and 10 MiB may be refused)
MIN_SAMPLE_RATE_HZ = 16000
MAX_DURATION_S = 60.0  # longer audio fails with InternalError ("audio preprocess server error")
MIN_SPEECH_S = 10.0  # speech must total MORE than this
MIN_RUN_S = 5.0  # one continuous speech run must be LONGER than this

# The service needs 16 kHz; `run` may upsample narrowband speech (8 kHz telephone, 11.025 kHz
# and the like). Under this rate a header is refused unread: decoding cost grows as 1/rate
# when the header lies about it (a 512 KB file "at 1 Hz" holds 72 hours of samples).
MIN_RATE_HZ = 4000
MAX_RATE_HZ = 768_000  # the highest rate recorders and converters write (DXD x2)
MAX_CHANNELS = 64  # 7th-order ambisonics; multitrack recorders write up to 32 channels

# The most audio a file the service accepts could hold: 10 MB at MP3's lowest bit rate
# (8 kbit/s) is 10,000 s. Longer inputs are refused before decoding, and decoding stops there.
MAX_INPUT_S = 10_000.0

# Decoded frames per byte of file: 16-bit mono PCM holds 0.5, MP3 at 8 kbit/s and 16 kHz 16,
# Opus at 6 kbit/s and 48 kHz 64, long digital silence in FLAC or Opus (DTX) up to about 1,000.
# A decode that goes past this (plus a minute) is a lying header or a looping stream.
MAX_FRAMES_PER_BYTE = 2048
SLACK_S = 60.0

DECODER_HINT = "the file is damaged or not audio; export it again from the recorder"


def refuse(path: str, message: str, hint: str | None = None, code: str = "Audio.DecoderError") -> PipelineError:
    return service_error(code, message, hint=hint, source=path)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "a special file"


def read_head(path: str, n: int = 64) -> tuple[bytes, int]:
    """The first ``n`` bytes and the size of the regular file at ``path``.

    Special files (FIFOs, sockets, devices) are refused from ``os.stat`` without being opened:
    opening a FIFO for reading blocks until a writer comes, and a device can be endless.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise refuse(
                path, "a broken link: the file it points to does not exist", "link or copy the recording again"
            ) from None
        raise refuse(path, "no such file", "check the path") from None
    except OSError as exc:
        raise refuse(path, f"cannot open: {_os_words(exc)}", "check the path and its permissions") from None
    if stat.S_ISDIR(st.st_mode):
        raise refuse(path, "is a directory, not an audio file", "name the files, or the folder to search it")
    if not stat.S_ISREG(st.st_mode):
        raise refuse(
            path,
            f"not a regular file but {_kind(st.st_mode)}",
            "voiceprep reads recordings from regular files only; copy the audio into a file",
        )
    if st.st_size == 0:
        raise refuse(path, "the file is empty (0 bytes)", "export or copy the recording again")
    try:
        # O_NONBLOCK: should the path have become a FIFO since the stat, opening it cannot block
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise refuse(path, "not a regular file", "voiceprep reads recordings from regular files only")
            head = os.read(fd, n)
        finally:
            os.close(fd)
    except OSError as exc:
        raise refuse(path, f"cannot read: {_os_words(exc)}", "check the path and its permissions") from None
    return head, st.st_size


def _os_words(exc: OSError) -> str:
    words = {
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.ELOOP: "a symbolic link loop",
        errno.ENAMETOOLONG: "the name is too long",
        errno.ENOTDIR: "a part of the path is not a folder",
        errno.EIO: "a read error on the disk",
    }
    return words.get(exc.errno or 0, (exc.strerror or type(exc).__name__).lower())


def admit(info: SourceInfo) -> None:
    """Refuse a probed file whose header is outside every limit, before anything is decoded."""
    p = info.path
    if info.sample_rate <= 0 or info.channels <= 0:
        raise refuse(p, "the audio track has no sample rate or no channels")
    if info.channels > MAX_CHANNELS:
        raise refuse(p, f"the header declares {info.channels} channels; no recording has more than {MAX_CHANNELS}")
    if info.sample_rate > MAX_RATE_HZ:
        raise refuse(p, f"the header declares {info.sample_rate} Hz; no recording is made at over {MAX_RATE_HZ} Hz")
    if info.sample_rate < MIN_RATE_HZ:
        raise refuse(
            p,
            f"sample rate {info.sample_rate} Hz is far under 16 kHz (not decoded)",
            "record again at 16 kHz or more (44.1 or 48 kHz is best)",
            code="Audio.AudioRateError",
        )
    if info.duration_s > MAX_INPUT_S:
        if info.duration_s * info.sample_rate > _frames_by_size(info):
            raise refuse(
                p,
                f"the header declares {info.duration_s:.0f} s of audio, more than a file of "
                f"{info.size_bytes} bytes can hold",
            )
        raise refuse(
            p,
            f"audio is {info.duration_s:.0f} s long; voiceprep reads at most {MAX_INPUT_S:.0f} s "
            "(the most a 10 MB upload can hold)",
            "cut the recording into parts under 2 hours",
            code="InternalError",
        )


def _frames_by_size(info: SourceInfo) -> int:
    return MAX_FRAMES_PER_BYTE * max(info.size_bytes, 0) + int(SLACK_S * info.sample_rate)


def frame_budget(info: SourceInfo) -> int:
    """The most frames (at the source rate) decoding ``info`` may produce."""
    return min(_frames_by_size(info), int((MAX_INPUT_S + SLACK_S) * info.sample_rate))


def over_budget(info: SourceInfo, frames: int) -> PipelineError:
    """The refusal for a decode stopped at its budget after ``frames`` frames."""
    got_s = frames / info.sample_rate
    if got_s > MAX_INPUT_S:
        return refuse(
            info.path,
            f"audio is over {MAX_INPUT_S:.0f} s long; voiceprep reads at most that (the most a 10 MB upload can hold)",
            "cut the recording into parts under 2 hours",
            code="InternalError",
        )
    return refuse(
        info.path,
        f"decoding produced {got_s:.0f} s of audio, more than a file of {info.size_bytes} bytes can hold "
        f"(its header says {info.duration_s:.0f} s); stopped",
    )


# FFmpeg's error codes as PyAV raises them, in words a person can act on.
_AV_WORDS = {
    "InvalidDataError": "the data is damaged or not audio",
    "EOFError": "the file ends in the middle of the audio",
    "PatchWelcomeError": "it uses a feature the decoder does not support",
    "DecoderNotFoundError": "no decoder for its codec",
    "DemuxerNotFoundError": "not a known audio format",
    "BugError": "the decoder gave up on it",
    "UnknownError": "the decoder gave up on it",
    "ExternalError": "the decoder gave up on it",
}
_ERRNO_WORDS = {
    errno.ENOMEM: "its header claims sizes no recording has",
    errno.EINVAL: "its header holds invalid values",
    errno.ENOSYS: "it uses a feature the decoder does not support",
    errno.EIO: "a read error",
    errno.EAGAIN: "the decoder gave up on it",
}
_ERRNO_RE = re.compile(r"\[Errno -?\d+\]\s*")


def plain_error(exc: BaseException, path: str) -> str:
    """What went wrong, in words: no FFmpeg error numbers, no function names, no path."""
    name = type(exc).__name__
    if name in _AV_WORDS and type(exc).__module__.startswith("av"):
        return _AV_WORDS[name]
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in _ERRNO_WORDS:
        return _ERRNO_WORDS[code]
    if isinstance(exc, MemoryError):
        return _ERRNO_WORDS[errno.ENOMEM]
    if isinstance(exc, UnicodeError):
        return "the data is damaged or not audio"
    if name == "LibsndfileError":
        said = str(getattr(exc, "error_string", "")).strip().rstrip(".")
        if getattr(exc, "code", None) == 1:
            return "not a known audio format"
        # libsndfile's own words for a damaged header ("Error in WAV file. No 'data' chunk marker")
        # are plain; its catch-alls ("internal error", "possibly a pipe?") mislead
        if not said.lower().startswith("error in "):
            return "the data is damaged or not audio"
        return said[:1].lower() + said[1:160]
    text = getattr(exc, "error_string", None) or getattr(exc, "strerror", None) or str(exc)
    text = _ERRNO_RE.sub("", str(text)).replace(repr(path), "the file").replace(path, "the file")
    text = text.strip().splitlines()[0].strip().rstrip(".") if text.strip() else name
    return text[:1].lower() + text[1:160]
