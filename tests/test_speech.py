"""Speech detection on real recordings: speech counts, music, noise, animals and a held vowel do not."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load

from pipeline import speech


def _report(name: str) -> speech.SpeechReport:
    x, sr = load(name)
    return speech.detect(x[0], sr)


def test_read_speech_is_mostly_speech():
    r = _report("speech_librivox_16k.wav")
    assert 20.0 <= r.speech_s <= 24.5  # 26.2 s with four 0.3 s joins and phrase pauses
    assert r.longest_speech_s > 5.0
    assert 0.3 <= r.longest_pause_s <= 1.5
    assert np.all(np.diff(r.segments, axis=1) > 0)
    assert np.all(r.segments[1:, 0] >= r.segments[:-1, 1])  # sorted, no overlap


@pytest.mark.parametrize(
    "name",
    [
        "nonspeech_music_stereo_44k.flac",
        "nonspeech_hold_music_8k.flac",
        "nonspeech_elephant_48k.flac",
        "noise_room_ami_16k.flac",
    ],
)
def test_music_noise_and_animals_are_not_speech(name: str):
    r = _report(name)
    assert r.speech_s < 0.5, f"{name}: {r.speech_s:.2f} s called speech"


def test_webrtcvad_alone_would_call_music_speech():
    # the reason Silero decides: webrtcvad flags most music frames
    x, sr = load("nonspeech_music_stereo_44k.flac")
    flags = speech.webrtc_flags(speech.to_vad_rate(x[0], sr))
    assert flags.mean() > 0.5


def test_sustained_vowel_is_not_speech():
    # the held "aaaa" runs from 2.9 s to 7.0 s; only its onset may look like speech
    r = _report("vowel_sustained_50k.wav")
    held = sum(max(0.0, min(b, 7.0) - max(a, 3.4)) for a, b in r.segments)
    assert held < 0.3
    assert r.speech_s < 2.5


def test_silence_and_empty_input():
    assert speech.detect(np.zeros(16000 * 3, np.float32), 16000).speech_s == 0.0
    assert speech.detect(np.zeros(0, np.float32), 16000).speech_s == 0.0


def test_merge_gap_controls_continuous_runs():
    segs = np.array([[0.0, 2.0], [2.3, 4.0], [5.5, 9.0]])
    assert speech.merge_gaps(segs, 0.5).tolist() == [[0.0, 4.0], [5.5, 9.0]]
    assert speech.merge_gaps(segs, 2.0).tolist() == [[0.0, 9.0]]
    assert speech.merge_gaps(segs, 0.1).tolist() == segs.tolist()
    assert speech.merge_gaps(segs, 0.3).tolist() == [[0.0, 4.0], [5.5, 9.0]]  # a pause of exactly gap_s joins


def test_detection_is_rate_independent():
    x, sr = load("speech_librivox_16k.wav")
    import soxr

    r16 = speech.detect(x[0], sr)
    r48 = speech.detect(soxr.resample(x[0], sr, 48000), 48000)
    assert r48.speech_s == pytest.approx(r16.speech_s, abs=0.5)


def test_detection_does_not_depend_on_what_ran_before():
    """webrtcvad adapts a noise estimate as it listens: the same file must get the same
    segments whether it is the first of a batch or comes after other recordings."""
    a, sr = load("speech_arctic_slt_16k.wav")
    b, _ = load("noise_room_ami_16k.flac")
    c, _ = load("speech_librivox_16k.wav")
    first = speech.detect(a[0], sr).segments
    speech.detect(b[0], sr)
    speech.detect(c[0] * 0.05, sr)
    assert np.array_equal(speech.detect(a[0], sr).segments, first)
    flags = speech.webrtc_flags(a[0])
    speech.webrtc_flags(b[0])
    assert np.array_equal(speech.webrtc_flags(a[0]), flags)
