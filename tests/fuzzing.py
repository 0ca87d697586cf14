"""Seeded mutations of real WAV/RF64/MP3/M4A files, and a table of hand-made bad headers.

The suite (tests/test_hostile.py) judges a few hundred of them; tests/fuzz_offline.py runs
thousands, each in a watched worker process (its docstring has the command). Every variant is
rebuilt from ``(seed, index)`` alone.
"""

from __future__ import annotations

import random
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from conftest import write_av

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

# Values that break parsers: zero, one, signed and unsigned edges of each width.
INTERESTING = (0, 1, 2, 3, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF,
               0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)


@dataclass(frozen=True)
class Seed:
    """A valid file the mutations start from: ``kind`` is wav, rf64, mp3 or m4a."""

    name: str
    kind: str
    data: bytes


def _load(name: str, start_s: float, length_s: float) -> tuple[np.ndarray, int]:
    import soundfile as sf

    with sf.SoundFile(FIXTURES / name) as f:
        f.seek(int(start_s * f.samplerate))
        x = f.read(int(length_s * f.samplerate), dtype="float32", always_2d=True)
        return np.ascontiguousarray(x.T), int(f.samplerate)


def seeds(workdir: Path, length_s: float = 4.0) -> list[Seed]:
    """Valid files made from the fixtures, ``length_s`` long (mono; stereo at most 5 s): 16-bit,
    24-bit EXTENSIBLE and RF64 WAV, MP3 (CBR with an ID3 tag and an Info frame, mono 16 kHz and
    stereo 44.1 kHz) and M4A (moov last, and first)."""
    import soundfile as sf

    workdir.mkdir(parents=True, exist_ok=True)
    mono, mono_sr = _load("speech_librivox_16k.wav", 0.0, min(length_s, 26.0))
    stereo, stereo_sr = _load("speech_wikipedia_stereo_44k.wav", 0.5, min(length_s / 2, 5.0))
    made: list[tuple[str, str, Callable[[Path], None]]] = [
        ("mono16k.wav", "wav", lambda p: sf.write(p, mono.T, mono_sr, subtype="PCM_16")),
        ("stereo44k.wav", "wav", lambda p: sf.write(p, stereo.T, stereo_sr, subtype="PCM_16")),
        ("ext24.wav", "wav", lambda p: sf.write(p, mono.T, mono_sr, subtype="PCM_24", format="WAVEX")),
        ("rf64.wav", "rf64", lambda p: sf.write(p, mono.T, mono_sr, subtype="PCM_16", format="RF64")),
        ("mono16k.mp3", "mp3", lambda p: write_av(p, mono, mono_sr, "mp3", "libmp3lame", 32_000)),
        ("stereo44k.mp3", "mp3", lambda p: write_av(p, stereo, stereo_sr, "mp3", "libmp3lame", 128_000)),
        ("mono16k.m4a", "m4a", lambda p: write_av(p, mono, mono_sr, "mp4", "aac", 48_000)),
        ("stereo44k.m4a", "m4a", lambda p: write_av(p, stereo, stereo_sr, "mp4", "aac", 96_000, faststart=True)),
    ]
    out = []
    for name, kind, make in made:
        path = workdir / name
        if not path.exists():
            make(path)
        out.append(Seed(name, kind, path.read_bytes()))
    return out


# ---- structure: where the header fields of each format are ------------------------------------------


@dataclass(frozen=True)
class Field:
    """A header integer at ``offset``: ``width`` bytes, ``big`` endian or not."""

    name: str
    offset: int
    width: int
    big: bool


def wav_fields(b: bytes) -> list[Field]:
    """The RIFF/RF64 header and chunk fields: sizes, the fmt fields, ds64's 64-bit sizes."""
    out = [Field("riff_size", 4, 4, False)]
    pos = 12
    while pos + 8 <= len(b) and len(out) < 64:
        cid = b[pos : pos + 4]
        size = struct.unpack_from("<I", b, pos + 4)[0]
        tag = cid.decode("latin-1").strip()
        out.append(Field(f"{tag}_size", pos + 4, 4, False))
        body = pos + 8
        if cid == b"fmt ":
            for name, off, width in (("tag", 0, 2), ("channels", 2, 2), ("rate", 4, 4), ("byte_rate", 8, 4),
                                     ("align", 12, 2), ("bits", 14, 2), ("cb_size", 16, 2), ("valid_bits", 18, 2),
                                     ("channel_mask", 20, 4), ("subformat", 24, 2)):
                if off + width <= size and body + off + width <= len(b):
                    out.append(Field(f"fmt_{name}", body + off, width, False))
        elif cid == b"ds64":
            for name, off, width in (("riff64", 0, 8), ("data64", 8, 8), ("frames64", 16, 8), ("table", 24, 4)):
                if body + off + width <= len(b):
                    out.append(Field(f"ds64_{name}", body + off, width, False))
        if cid == b"data":
            break
        pos = body + size + (size & 1)
    return out


_MP4_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"dinf", b"stbl", b"udta", b"edts", b"mvex"}
# fields inside full boxes, relative to the body (after the 8-byte header, version 0 layouts)
_MP4_FIELDS: dict[bytes, tuple[tuple[str, int, int], ...]] = {
    b"mvhd": (("timescale", 12, 4), ("duration", 16, 4)),
    b"mdhd": (("timescale", 12, 4), ("duration", 16, 4)),
    b"stsd": (("entries", 4, 4), ("entry_size", 8, 4), ("channels", 32, 2), ("sample_bits", 34, 2),
              ("rate", 40, 4)),
    b"stts": (("entries", 4, 4), ("count", 8, 4), ("delta", 12, 4)),
    b"stsz": (("sample_size", 4, 4), ("count", 8, 4), ("first", 12, 4)),
    b"stsc": (("entries", 4, 4), ("first_chunk", 8, 4), ("per_chunk", 12, 4), ("desc", 16, 4)),
    b"stco": (("entries", 4, 4), ("first", 8, 4)),
    b"dref": (("entries", 4, 4), ("entry_size", 8, 4)),
    b"elst": (("entries", 4, 4), ("duration", 8, 4), ("media_time", 12, 4)),
}


def mp4_boxes(b: bytes, start: int = 0, end: int | None = None, depth: int = 0) -> list[tuple[bytes, int, int]]:
    """(type, offset, declared size) of every box, depth first, as far as the sizes hold."""
    end = len(b) if end is None else end
    out: list[tuple[bytes, int, int]] = []
    pos = start
    while pos + 8 <= end and depth < 8 and len(out) < 200:
        size, typ = struct.unpack_from(">I4s", b, pos)
        out.append((typ, pos, size))
        if size < 8:
            break
        if typ in _MP4_CONTAINERS:
            out.extend(mp4_boxes(b, pos + 8, min(pos + size, end), depth + 1))
        pos += size
    return out


def mp4_fields(b: bytes) -> list[Field]:
    out = []
    for typ, pos, _ in mp4_boxes(b):
        tag = typ.decode("latin-1")
        out.append(Field(f"{tag}_size", pos, 4, True))
        for name, off, width in _MP4_FIELDS.get(typ, ()):
            if pos + 8 + off + width <= len(b):
                out.append(Field(f"{tag}_{name}", pos + 8 + off, width, True))
    return out


def mp3_fields(b: bytes) -> list[Field]:
    """The ID3v2 size, the first frame's header, and the Info/Xing frame and byte counts."""
    out = []
    first = 0
    if b[:3] == b"ID3" and len(b) >= 10:
        out.append(Field("id3_size", 6, 4, True))
        out.append(Field("id3_flags", 5, 1, True))
        size = 0
        for c in b[6:10]:
            size = (size << 7) | (c & 0x7F)
        first = 10 + size
    if first + 4 <= len(b):
        out.append(Field("frame_header", first, 4, True))
    for tag in (b"Info", b"Xing"):
        i = b.find(tag, first, first + 64)
        if i >= 0 and i + 16 <= len(b):
            out += [Field("xing_flags", i + 4, 4, True), Field("xing_frames", i + 8, 4, True),
                    Field("xing_bytes", i + 12, 4, True)]
    return out


def fields(kind: str, b: bytes) -> list[Field]:
    if kind in ("wav", "rf64"):
        return wav_fields(b)
    if kind == "m4a":
        return mp4_fields(b)
    return mp3_fields(b)


def set_field(b: bytes, f: Field, value: int) -> bytes:
    value &= (1 << (8 * f.width)) - 1
    out = bytearray(b)
    out[f.offset : f.offset + f.width] = value.to_bytes(f.width, "big" if f.big else "little")
    return bytes(out)


def get_field(b: bytes, f: Field) -> int:
    return int.from_bytes(b[f.offset : f.offset + f.width], "big" if f.big else "little")


# ---- mutations ----------------------------------------------------------------------------------------


def _pos(rng: random.Random, n: int) -> int:
    """A position, half the time in the first 2 KB where the headers are."""
    if n <= 1:
        return 0
    return rng.randrange(min(n, 2048)) if rng.random() < 0.5 else rng.randrange(n)


def _flip(rng: random.Random, b: bytes, _kind: str) -> tuple[str, bytes]:
    out = bytearray(b)
    k = rng.choice((1, 2, 4, 16, 64))
    for _ in range(k):
        i = _pos(rng, len(out))
        out[i] ^= 1 << rng.randrange(8) if rng.random() < 0.7 else rng.randrange(1, 256)
    return f"flip{k}", bytes(out)


def _truncate(rng: random.Random, b: bytes, _kind: str) -> tuple[str, bytes]:
    i = _pos(rng, len(b)) if rng.random() < 0.5 else int(len(b) * rng.random())
    return "trunc", b[:i]


def _insert(rng: random.Random, b: bytes, _kind: str) -> tuple[str, bytes]:
    i = _pos(rng, len(b))
    n = rng.choice((1, 3, 16, 512, 4096))
    junk = rng.randbytes(n) if rng.random() < 0.5 else bytes([rng.randrange(256)]) * n
    return f"insert{n}", b[:i] + junk + b[i:]


def _delete(rng: random.Random, b: bytes, _kind: str) -> tuple[str, bytes]:
    i = _pos(rng, len(b))
    n = rng.choice((1, 4, 100, 3000))
    return f"delete{n}", b[:i] + b[i + n :]


def _duplicate(rng: random.Random, b: bytes, _kind: str) -> tuple[str, bytes]:
    i = _pos(rng, len(b))
    n = rng.choice((8, 64, 1024, 8192))
    j = _pos(rng, len(b))
    return f"dup{n}", b[:j] + b[i : i + n] + b[j:]


def _field(rng: random.Random, b: bytes, kind: str) -> tuple[str, bytes]:
    found = fields(kind, b)
    if not found:
        return _flip(rng, b, kind)
    f = rng.choice(found)
    old = get_field(b, f)
    value = rng.choice((*INTERESTING, old + 1, old - 1, old * 2, old // 2, old * 1000, len(b), len(b) + 1,
                        rng.getrandbits(8 * f.width)))
    return f"{f.name}={value & ((1 << (8 * f.width)) - 1):#x}", set_field(b, f, value)


def _int_at(rng: random.Random, b: bytes, _kind: str) -> tuple[str, bytes]:
    width = rng.choice((1, 2, 4, 8))
    i = rng.randrange(max(1, min(len(b), 1024) - width))
    f = Field("int", i, width, rng.random() < 0.5)
    value = rng.choice(INTERESTING)
    return f"int{width}@{i}", set_field(b, f, value) if i + width <= len(b) else b


MUTATIONS: tuple[Callable[[random.Random, bytes, str], tuple[str, bytes]], ...] = (
    _flip, _flip, _truncate, _insert, _delete, _duplicate, _field, _field, _field, _int_at,
)


def variant(all_seeds: list[Seed], seed: int, index: int) -> tuple[str, bytes]:
    """The ``index``-th mutated file of the run seeded ``seed``: (file name, bytes)."""
    rng = random.Random(f"voiceprep-fuzz:{seed}:{index}")
    base = all_seeds[index % len(all_seeds)]
    data = base.data
    ops = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        op, data = rng.choice(MUTATIONS)(rng, data, base.kind)
        ops.append(op)
    stem, ext = base.name.rsplit(".", 1)
    tag = re.sub(r"[^A-Za-z0-9_=@-]", "", "_".join(ops))[:60]
    return f"{index:05d}_{stem}_{tag}.{ext}", data


def variants(all_seeds: list[Seed], count: int, seed: int, start: int = 0) -> Iterator[tuple[str, bytes]]:
    for i in range(start, start + count):
        yield variant(all_seeds, seed, i)


# ---- hand-made bad headers ----------------------------------------------------------------------------


def _named(kind: str, b: bytes, name: str) -> Field:
    return next(f for f in fields(kind, b) if f.name == name)


def _edit(s: Seed, **values: int) -> bytes:
    b = s.data
    for name, value in values.items():
        b = set_field(b, _named(s.kind, b, name), value)
    return b


def _syncsafe(n: int) -> bytes:
    return bytes(((n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F))


def _wav(tag: int, channels: int, rate: int, bits: int, data: bytes, data_size: int | None = None) -> bytes:
    align = (channels * bits // 8) & 0xFFFF
    fmt = struct.pack("<HHIIHH", tag, channels, rate, (rate * align) & 0xFFFFFFFF, align, bits)
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _flac_streaminfo(b: bytes, rate: int | None = None, frames: int | None = None) -> bytes:
    """FLAC with its STREAMINFO sample rate (20 bits) or total samples (36 bits) replaced."""
    out = bytearray(b)
    base = 8 + 10  # "fLaC", the block header, then min/max block and frame sizes
    bits = int.from_bytes(out[base : base + 8], "big")
    if rate is not None:
        bits = (bits & ~(0xFFFFF << 44)) | ((rate & 0xFFFFF) << 44)
    if frames is not None:
        bits = (bits & ~0xFFFFFFFFF) | (frames & 0xFFFFFFFFF)
    out[base : base + 8] = bits.to_bytes(8, "big")
    return bytes(out)


def bad_headers(all_seeds: list[Seed], workdir: Path) -> list[tuple[str, bytes, str | None]]:
    """(file name, bytes, the code expected or None for any code) of hand-made broken headers."""
    import soundfile as sf

    by = {s.name: s for s in all_seeds}
    wav, ext, rf64 = by["mono16k.wav"], by["ext24.wav"], by["rf64.wav"]
    mp3, m4a, fast = by["mono16k.mp3"], by["mono16k.m4a"], by["stereo44k.m4a"]
    pcm = wav.data[44:]
    dec, rate_err = "Audio.DecoderError", "Audio.AudioRateError"
    flac_path = workdir / "seed.flac"
    if not flac_path.exists():
        x, sr = _load("speech_librivox_16k.wav", 0.0, 3.0)
        sf.write(flac_path, x.T, sr, subtype="PCM_16", format="FLAC")
    flac = flac_path.read_bytes()
    moov = next(pos for typ, pos, _ in mp4_boxes(m4a.data) if typ == b"moov")
    mdat = next(pos for typ, pos, _ in mp4_boxes(m4a.data) if typ == b"mdat")
    id3_end = 10 + sum((c & 0x7F) << (7 * (3 - i)) for i, c in enumerate(mp3.data[6:10]))
    frame = _named("mp3", mp3.data, "frame_header")
    hdr = get_field(mp3.data, frame)
    cases: list[tuple[str, bytes, str | None]] = [
        ("bits0.wav", _edit(wav, fmt_bits=0), dec),
        ("bits7.wav", _edit(wav, fmt_bits=7), None),
        ("tag_ffff.wav", _edit(wav, fmt_tag=0xFFFF), dec),
        ("tag0.wav", _edit(wav, fmt_tag=0), dec),
        ("rate1.wav", _wav(1, 1, 1, 16, pcm * 4), rate_err),  # 512 KB at 1 Hz
        ("rate0.wav", _edit(wav, fmt_rate=0), dec),
        ("rate100.wav", _edit(wav, fmt_rate=100, fmt_byte_rate=200), rate_err),
        ("rate_max.wav", _edit(wav, fmt_rate=0xFFFFFFFF), dec),
        ("rate_4g_pcm.wav", _wav(1, 1, 0x7FFFFFFF, 16, pcm), dec),
        ("channels0.wav", _edit(wav, fmt_channels=0), dec),
        ("channels65535.wav", _edit(wav, fmt_channels=0xFFFF), dec),
        ("channels65535_align.wav", _wav(1, 0xFFFF, 16000, 16, pcm), dec),
        ("channels200.wav", _wav(1, 200, 16000, 16, pcm), dec),
        ("align0.wav", _edit(wav, fmt_align=0), None),
        ("data_bigger_than_file.wav", _edit(wav, data_size=0x7FFFFFFF), dec),
        ("data_ffffffff.wav", _edit(wav, data_size=0xFFFFFFFF), None),
        ("data0.wav", _edit(wav, data_size=0), None),
        ("fmt_size_huge.wav", _edit(wav, fmt_size=0xFFFFFFF0), dec),
        ("fmt_size0.wav", _edit(wav, fmt_size=0), dec),
        ("riff_size0.wav", _edit(wav, riff_size=0), None),
        ("no_fmt.wav", wav.data.replace(b"fmt ", b"junk", 1), dec),
        ("no_data.wav", wav.data.replace(b"data", b"dat_", 1), dec),
        ("header_only.wav", wav.data[:44], dec),
        ("ext_guid_ffff.wav", _edit(ext, fmt_subformat=0xFFFF), None),
        ("ext_cb_huge.wav", _edit(ext, fmt_cb_size=0xFFFF), None),
        ("ext_valid_bits0.wav", _edit(ext, fmt_valid_bits=0), None),
        ("ext_channels65535.wav", _edit(ext, fmt_channels=0xFFFF), dec),
        ("rf64_data_2e63.wav", _edit(rf64, ds64_data64=1 << 63), None),
        ("rf64_data_max.wav", _edit(rf64, ds64_data64=(1 << 64) - 1), None),
        ("rf64_frames_max.wav", _edit(rf64, ds64_frames64=(1 << 64) - 1), None),
        ("rf64_riff0.wav", _edit(rf64, ds64_riff64=0), None),
        ("rf64_table_huge.wav", _edit(rf64, ds64_table=0xFFFFFFFF), None),
        ("rf64_no_ds64.wav", rf64.data.replace(b"ds64", b"junk", 1), None),
        ("rf64_rate1.wav", _edit(rf64, fmt_rate=1), rate_err),
        ("m4a_moov_size0.m4a", set_field(m4a.data, Field("s", moov, 4, True), 0), None),
        ("m4a_moov_size1.m4a", set_field(m4a.data, Field("s", moov, 4, True), 1), dec),
        ("m4a_moov_huge.m4a", set_field(m4a.data, Field("s", moov, 4, True), 0xFFFFFFFF), None),
        ("m4a_mdat_size1_huge.m4a", set_field(m4a.data, Field("s", mdat, 4, True), 1), None),
        ("m4a_mdat_size0.m4a", set_field(m4a.data, Field("s", mdat, 4, True), 0), None),
        ("m4a_dinf_size1.m4a", _edit(m4a, dinf_size=1), dec),
        ("m4a_dinf_size0.m4a", _edit(m4a, dinf_size=0), None),
        ("m4a_stsd_size1.m4a", _edit(m4a, stsd_size=1), dec),
        ("m4a_stbl_huge.m4a", _edit(m4a, stbl_size=0x7FFFFFFF), None),
        ("m4a_mdhd_timescale0.m4a", _edit(m4a, mdhd_timescale=0), None),
        ("m4a_mdhd_timescale1.m4a", _edit(m4a, mdhd_timescale=1), None),
        ("m4a_mdhd_duration_max.m4a", _edit(m4a, mdhd_duration=0xFFFFFFFF), None),
        ("m4a_mvhd_duration_max.m4a", _edit(m4a, mvhd_duration=0xFFFFFFFF, mvhd_timescale=1), None),
        ("m4a_channels0.m4a", _edit(m4a, stsd_channels=0), None),
        ("m4a_channels65535.m4a", _edit(m4a, stsd_channels=0xFFFF), None),
        ("m4a_rate0.m4a", _edit(m4a, stsd_rate=0), None),
        ("m4a_rate1.m4a", _edit(m4a, stsd_rate=1 << 16), None),
        ("m4a_stts_delta_max.m4a", _edit(m4a, stts_delta=0xFFFFFFFF), None),
        ("m4a_stts_count_max.m4a", _edit(m4a, stts_count=0xFFFFFFFF), None),
        ("m4a_stsz_count_max.m4a", _edit(m4a, stsz_count=0xFFFFFFFF), None),
        ("m4a_stsz_size1.m4a", _edit(m4a, stsz_sample_size=1), None),
        ("m4a_stsc_per_chunk_max.m4a", _edit(m4a, stsc_per_chunk=0xFFFFFFFF), None),
        ("m4a_stco_past_end.m4a", _edit(m4a, stco_first=0xFFFFFFF0), None),
        ("m4a_faststart_stsz_count_max.m4a", _edit(fast, stsz_count=0xFFFFFFFF), None),
        ("m4a_faststart_moov_size1.m4a", _edit(fast, moov_size=1), dec),
        ("m4a_ftyp_only.m4a", m4a.data[:28], dec),
        ("m4a_no_moov.m4a", m4a.data[:moov], dec),
        ("mp3_id3_giant.mp3", mp3.data[:6] + _syncsafe(0x0FFFFFFF) + mp3.data[10:], None),
        ("mp3_id3_past_end.mp3", mp3.data[:6] + _syncsafe(len(mp3.data) + 1000) + mp3.data[10:], dec),
        ("mp3_id3_only.mp3", mp3.data[:id3_end], dec),
        ("mp3_rate_reserved.mp3", set_field(mp3.data, frame, hdr | 0x0C00), None),
        ("mp3_layer_reserved.mp3", set_field(mp3.data, frame, hdr & ~0x060000), None),
        ("mp3_free_format.mp3", set_field(mp3.data, frame, hdr & ~0xF000), None),
        ("mp3_xing_frames_max.mp3", _edit(mp3, xing_frames=0xFFFFFFFF), None),
        ("mp3_xing_frames0.mp3", _edit(mp3, xing_frames=0), None),
        ("mp3_sync_only.mp3", b"\xff\xfb" * 20000, dec),
        ("flac_rate1.flac", _flac_streaminfo(flac, rate=1), rate_err),
        ("flac_rate0.flac", _flac_streaminfo(flac, rate=0), None),
        ("flac_frames_max.flac", _flac_streaminfo(flac, frames=(1 << 36) - 1), None),
        ("empty.wav", b"", dec),
        ("one_byte.mp3", b"\xff", dec),
        ("riff_only.wav", b"RIFF", dec),
        ("riff_wave_only.wav", b"RIFF\x04\x00\x00\x00WAVE", dec),
        ("zeros.wav", bytes(1 << 20), dec),
        ("random.m4a", random.Random(7).randbytes(300_000), dec),
        ("text.wav", b"this is not audio\n" * 100, dec),
    ]
    return cases
