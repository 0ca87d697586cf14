"""measures.spectrum: mains hum, rumble and effective bandwidth of real speech with the fault added at known strength."""

from __future__ import annotations

import numpy as np
import pytest
import quality_signals as qs

from pipeline import speech
from pipeline.measures.spectrum import effective_bandwidth, hum, rumble_db

R = 16000



@pytest.mark.parametrize("freq", [50.0, 60.0])
def test_hum_found_at_its_frequency(freq: float):
    x, segs = qs.reader_without_hum()
    assert hum(x, R)[0] is None  # this recording has none of its own
    hz, prominence, level = hum(qs.add_hum(x, R, freq, -35.0, segs), R)
    assert hz == freq
    assert prominence > 10.0
    assert level == pytest.approx(-35.0, abs=4.0)


def test_rumble_rises_with_low_frequency_noise():
    x = qs.load("speech_allison_8k.flac")[: 20 * R]  # phone speech: nothing under 300 Hz
    from scipy.signal import butter, sosfilt

    low = sosfilt(butter(4, 45, fs=R, output="sos"), qs.white(len(x), seed=3)).astype(np.float32)
    y = x + low * (0.3 * np.std(x) / np.std(low))
    assert rumble_db(y, R) > rumble_db(x, R) + 10.0


def test_narrowband_speech_dressed_as_44k_is_found():
    al = qs.load("speech_allison_8k.flac", None)[: 8000 * 20]
    y = qs.narrowband(al, 8000, 44100)
    bw = effective_bandwidth(y, 44100, speech.detect(y, 44100).segments)
    assert bw < 4200


def test_wideband_speech_keeps_its_bandwidth():
    x, segs = qs.reader()
    assert effective_bandwidth(qs.narrowband(x, R, 44100), 44100, segs) > 6500
