"""measures.spectrum: mains hum, rumble and effective bandwidth of real speech with the fault added at known strength."""

from __future__ import annotations

import numpy as np
import pytest
import quality_signals as qs

from pipeline import speech
from pipeline.measures.spectrum import HUM_MIN_S, effective_bandwidth, measure_hum, rumble_db

R = 16000



@pytest.mark.parametrize(("freq", "level"), [(50.0, -35.0), (60.0, -30.0), (59.8, -25.0), (50.4, -30.0)])
def test_hum_found_at_its_measured_frequency(freq: float, level: float):
    """Off-nominal mains (59.8, 50.4 Hz) is found at its own frequency, and the level is a true one."""
    x, segs = qs.reader_without_hum()
    assert measure_hum(x, R).level_db() == -120.0  # no line of its own stands 10 dB out
    h = measure_hum(qs.add_hum(x, R, freq, level, segs), R)
    assert h.f0_hz == pytest.approx(freq, abs=0.05)
    assert h.peak_prominence_db > 10.0
    assert h.level_db() == pytest.approx(level, abs=3.0)
    assert len(h.lines_hz) >= 3


def test_a_missing_fundamental_is_found_from_its_harmonics():
    """Buzz with no line at the fundamental: the comb of harmonics names it."""
    x, segs = qs.reader_without_hum()
    t = np.arange(len(x)) / R
    buzz = sum(np.sin(2 * np.pi * 59.9 * k * t) for k in range(2, 12))
    h = measure_hum(qs.mix_at_snr(x, np.asarray(buzz, dtype=np.float32), 25.0, R, segs), R)
    assert h.f0_hz == pytest.approx(59.9, abs=0.05)
    assert len(h.lines_hz) >= 8


def test_real_clean_readers_carry_no_strong_line():
    """Allison's real 60 Hz line is 78 dB under the voice (measured); chan3 has none over 10 dB."""
    al = qs.load("speech_allison_8k.flac")[: 20 * R]
    assert measure_hum(al, R).level_db() < -70.0
    c3, _ = qs.reader_without_hum()
    assert measure_hum(c3, R).level_db() == -120.0
    assert HUM_MIN_S == 5.0


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
