"""edges: 0.1-0.3 s of clean silence around the speech, with fades."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load

from pipeline.clip import Clip, SourceInfo, SpeechMap
from stages.edges import Edges, fit_edges

X, SR = load("speech_librivox_16k.wav")


@pytest.mark.parametrize(("lead", "tail"), [(0.0, 0.0), (0.05, 1.5), (2.0, 0.02), (0.2, 0.2)])
def test_margins_end_up_between_min_and_max(lead: float, tail: float):
    speech = X[0, SR : SR * 4]
    x = np.concatenate([np.zeros(int(lead * SR), np.float32), speech, np.zeros(int(tail * SR), np.float32)])
    y, shift = fit_edges(x, SR, lead, lead + 3.0, 0.1, 0.3, 0.2, 0.01)
    new_lead = lead + shift
    new_tail = len(y) / SR - (lead + 3.0 + shift)
    assert 0.1 - 1e-3 <= new_lead <= 0.3 + 1e-3
    assert 0.1 - 1e-3 <= new_tail <= 0.3 + 1e-3
    assert y[0] == 0.0 and y[-1] == 0.0  # faded to silence at both ends


def test_stage_shifts_the_speech_segments():
    x = np.concatenate([np.zeros(SR, np.float32), X[0, SR : SR * 4], np.zeros(SR, np.float32)])
    src = SourceInfo("t.wav", "wav", "pcm_s16le", 16, 1, SR, len(x) / SR, 0)
    found = np.array([[1.0, 4.0]])
    out = Edges()(Clip(x, SR, src, speech=SpeechMap(segments=found, runs=found, duration_s=len(x) / SR)))
    assert out.speech is not None and out.speech.segments.tolist() == [[0.2, 3.2]]
    assert out.duration_s == pytest.approx(3.4, abs=1e-3)
