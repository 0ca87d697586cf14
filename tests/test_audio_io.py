"""Decoding by content: every supported container/codec, wrong names, and broken files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from conftest import load, write_av

from pipeline import audio_io
from pipeline.errors import PipelineError

LIBRIVOX_S = 26.23


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, int]:
    return load("speech_librivox_16k.wav")


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


SF_CASES = [
    # (file name, soundfile format, subtype, container, codec, bit depth)
    ("u8.wav", "WAV", "PCM_U8", "wav", "pcm_u8", 8),
    ("s16.wav", "WAV", "PCM_16", "wav", "pcm_s16le", 16),
    ("s24.wav", "WAV", "PCM_24", "wav", "pcm_s24le", 24),
    ("s32.wav", "WAV", "PCM_32", "wav", "pcm_s32le", 32),
    ("f32.wav", "WAV", "FLOAT", "wav", "pcm_f32le", 32),
    ("f64.wav", "WAV", "DOUBLE", "wav", "pcm_f64le", 64),
    ("ulaw.wav", "WAV", "ULAW", "wav", "pcm_mulaw", 8),
    ("alaw.wav", "WAV", "ALAW", "wav", "pcm_alaw", 8),
    ("ext.wav", "WAVEX", "PCM_16", "wav", "pcm_s16le", 16),
    ("big.wav", "RF64", "PCM_16", "rf64", "pcm_s16le", 16),
    ("a.flac", "FLAC", "PCM_16", "flac", "flac", 16),
    ("a.ogg", "OGG", "VORBIS", "ogg", "vorbis", None),
    ("a.aiff", "AIFF", "PCM_16", "aiff", "pcm_s16be", 16),
]


@pytest.mark.parametrize(("name", "fmt", "subtype", "container", "codec", "depth"), SF_CASES)
def test_soundfile_formats_decode_with_their_facts(tmp_path: Path, speech, name, fmt, subtype, container, codec, depth):
    x, sr = speech
    p = tmp_path / name
    sf.write(p, x[0], sr, format=fmt, subtype=subtype)
    info = audio_io.probe(p)
    assert (info.container, info.codec, info.bit_depth) == (container, codec, depth)
    assert info.channels == 1 and info.sample_rate == sr
    assert info.duration_s == pytest.approx(LIBRIVOX_S, abs=0.05)
    assert info.size_bytes == p.stat().st_size
    clip = audio_io.decode(info)
    assert clip.samples.dtype == np.float32 and clip.samples.shape[0] == 1
    assert clip.duration_s == pytest.approx(LIBRIVOX_S, abs=0.1)
    assert _corr(clip.samples[0], x[0]) > (0.9 if codec in ("vorbis", "pcm_u8") else 0.99)


AV_CASES = [
    ("a.m4a", "mp4", "aac", "mp4", "aac", 16000),
    ("a.mp4", "mp4", "aac", "mp4", "aac", 16000),
    ("a.mov", "mov", "aac", "mp4", "aac", 16000),
    ("a.mp3", "mp3", "libmp3lame", "mp3", "mp3", 16000),
    ("a.webm", "webm", "libopus", "webm", "opus", 48000),
    ("a.opus", "ogg", "libopus", "ogg", "opus", 48000),
]


@pytest.mark.parametrize(("name", "fmt", "encoder", "container", "codec", "rate"), AV_CASES)
def test_compressed_formats_decode(tmp_path: Path, speech, name, fmt, encoder, container, codec, rate):
    x, sr = speech
    y = soxr.resample(x[0], sr, rate)[np.newaxis, :] if rate != sr else x
    p = write_av(tmp_path / name, y, rate, fmt, encoder)
    info = audio_io.probe(p)
    assert (info.container, info.codec) == (container, codec)
    assert info.sample_rate == rate and info.channels == 1
    clip = audio_io.decode(info, rate=16000, first_channel=True)
    assert clip.sample_rate == 16000
    assert clip.duration_s == pytest.approx(LIBRIVOX_S, abs=0.15)
    # codec delay shifts the signal by a few ms: compare loudness envelopes instead of samples
    env = lambda s: np.sqrt(np.mean(s[: len(s) // 800 * 800].reshape(-1, 800) ** 2, axis=1))  # noqa: E731
    assert _corr(env(clip.samples[0]), env(x[0])) > 0.95


def test_mp3_named_wav_decodes_as_mp3(tmp_path: Path, speech):
    x, sr = speech
    p = write_av(tmp_path / "real.mp3", x, sr, "mp3", "libmp3lame")
    fake = tmp_path / "take1.wav"
    fake.write_bytes(p.read_bytes())
    info = audio_io.probe(fake)
    assert info.container == "mp3" and info.codec == "mp3"
    assert audio_io.decode(info).duration_s == pytest.approx(LIBRIVOX_S, abs=0.15)


def test_stereo_first_channel_and_resampled_decode(tmp_path: Path, speech):
    x, sr = speech
    y = soxr.resample(x[0], sr, 48000)
    stereo = np.stack([y, np.zeros_like(y)])
    p = tmp_path / "s.wav"
    sf.write(p, stereo.T, 48000, subtype="PCM_16")
    full = audio_io.decode(p)
    assert full.samples.shape == (2, len(y))
    first = audio_io.decode(p, rate=16000, first_channel=True)
    assert first.samples.shape[0] == 1
    assert abs(first.samples.shape[1] - len(y) // 3) <= 2
    assert _corr(first.samples[0], x[0]) > 0.99


def test_region_decode(tmp_path: Path, speech):
    x, sr = speech
    clip = audio_io.decode(audio_io.probe(Path(__file__).parent.parent / "fixtures" / "speech_librivox_16k.wav"), start_s=5.0, end_s=8.0)
    assert clip.frames == 3 * sr and clip.offset_s == 5.0
    np.testing.assert_allclose(clip.samples[0], x[0, 5 * sr : 8 * sr], atol=1e-6)


def _bad(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.parametrize(
    ("name", "maker"),
    [
        ("empty.wav", lambda src: b""),
        ("noise.wav", lambda src: np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes()),
        ("notes.mp3", lambda src: b"These are my meeting notes, not audio.\n" * 100),
        ("image.m4a", lambda src: b"\x89PNG\r\n\x1a\n" + b"\x00" * 2000),
        ("header_only.wav", lambda src: src[:30]),
        ("cut.flac", lambda src: src[:200]),
    ],
)
def test_broken_files_are_decoder_errors(tmp_path: Path, speech, name, maker):
    x, sr = speech
    src_path = tmp_path / ("src" + Path(name).suffix)
    sf.write(src_path, x[0], sr, format="FLAC" if name.endswith(".flac") else "WAV")
    p = _bad(tmp_path, name, maker(src_path.read_bytes()))
    with pytest.raises(PipelineError) as err:
        audio_io.decode(p)
    assert err.value.code == "Audio.DecoderError"
    assert err.value.hint
    assert str(p) in err.value.line()
    assert "\n" not in err.value.line()


def test_truncated_wav_data_is_a_decoder_error(tmp_path: Path, speech):
    x, sr = speech
    p = tmp_path / "full.wav"
    sf.write(p, x[0], sr, subtype="PCM_16")
    cut = _bad(tmp_path, "cut.wav", p.read_bytes()[: 44 + 2 * sr * 3])  # header says 26 s, 3 s present
    with pytest.raises(PipelineError) as err:
        audio_io.decode(cut)
    assert err.value.code == "Audio.DecoderError"
    assert "truncated" in err.value.message


def test_sniff_names_containers_by_bytes():
    assert audio_io.sniff(b"RIFF\x00\x00\x00\x00WAVEfmt ") == "wav"
    assert audio_io.sniff(b"RF64\xff\xff\xff\xffWAVEds64") == "rf64"
    assert audio_io.sniff(b"ID3\x04\x00") == "mp3"
    assert audio_io.sniff(b"\xff\xfb\x90\x00") == "mp3"
    assert audio_io.sniff(b"\xff\xf1\x50\x80") == "aac"
    assert audio_io.sniff(b"\x00\x00\x00\x20ftypM4A ") == "mp4"
    assert audio_io.sniff(b"fLaC\x00") == "flac"
    assert audio_io.sniff(b"OggS\x00") == "ogg"
    assert audio_io.sniff(b"FORM\x00\x00\x00\x00AIFF") == "aiff"
    assert audio_io.sniff(b"\x1a\x45\xdf\xa3") == "webm"
    assert audio_io.sniff(b"hello") == "unknown"


def _with_chunk_before_data(src: bytes, cid: bytes, body: bytes) -> bytes:
    """``src`` (a canonical 44-byte-header WAV) with an extra chunk between `fmt ` and `data`."""
    import struct

    data_at = src.index(b"data")
    extra = cid + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")
    out = src[:data_at] + extra + src[data_at:]
    return out[:4] + struct.pack("<I", len(out) - 8) + out[8:]


@pytest.mark.parametrize("variant", ["mono", "stereo", "wavex", "odd_chunk", "not_pcm16"])
def test_wav_variants_decode_exactly(tmp_path: Path, speech, variant):
    """16-bit PCM WAV in its variants (and a 24-bit one): samples, facts and regions exact."""
    x, sr = speech
    rng = np.random.default_rng(3)
    sig = np.stack([x[0], 0.3 * rng.standard_normal(x.shape[1])]) if variant == "stereo" else x[:1]
    p = tmp_path / f"{variant}.wav"
    fmt, subtype = ("WAVEX", "PCM_16") if variant == "wavex" else ("WAV", "PCM_24" if variant == "not_pcm16" else "PCM_16")
    sf.write(p, sig.T, sr, format=fmt, subtype=subtype)
    if variant == "odd_chunk":
        p.write_bytes(_with_chunk_before_data(p.read_bytes(), b"LIST", b"INFOISFT\x03\x00\x00\x00ab\x00"))
    ref, _ = sf.read(p, dtype="float32", always_2d=True)
    info = audio_io.probe(p)
    assert (info.channels, info.sample_rate) == (sig.shape[0], sr)
    assert info.bit_depth == (24 if variant == "not_pcm16" else 16)
    assert abs(info.duration_s - sig.shape[1] / sr) < 1e-9
    clip = audio_io.decode(info)
    np.testing.assert_array_equal(clip.samples, ref.T)
    part = audio_io.decode(info, start_s=11.5, end_s=23.25)  # crosses a 10 s decode block
    np.testing.assert_array_equal(part.samples, ref.T[:, int(11.5 * sr) : int(23.25 * sr)])


def test_pcm16_wav_cut_inside_its_data_is_a_decoder_error_and_a_slight_cut_decodes(tmp_path: Path, speech):
    x, sr = speech
    p = tmp_path / "full.wav"
    sf.write(p, x[0], sr, subtype="PCM_16")
    whole = p.read_bytes()
    slight = _bad(tmp_path, "slight.wav", whole[: len(whole) - 2 * 100])  # 100 samples short of the header
    clip = audio_io.decode(slight)
    assert clip.frames == x.shape[1] - 100
    with pytest.raises(PipelineError) as err:
        audio_io.decode(_bad(tmp_path, "half.wav", whole[: len(whole) // 2]))
    assert err.value.code == "Audio.DecoderError" and "truncated" in err.value.message
