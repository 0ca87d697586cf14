"""measures.music: a music bed under real speech is found in the pauses; speech and noise are not music."""

from __future__ import annotations

import pytest
import quality_signals as qs

from pipeline import speech
from pipeline.measures.music import music_share

R = 16000



@pytest.mark.parametrize("level_db", [-10.0, -20.0, -30.0])
def test_music_bed_is_found_in_the_pauses(level_db: float):
    x, segs = qs.reader()
    share = music_share(qs.mix_at_snr(x, qs.music(len(x)), -level_db, R, segs), segs)
    assert share is not None and share > 0.2


def test_hold_music_bed_is_found():
    x, segs = qs.reader()
    bed = qs.music(len(x), which="nonspeech_hold_music_8k.flac")
    share = music_share(qs.mix_at_snr(x, bed, 20.0, R, segs), segs)
    assert share is not None and share > 0.2


@pytest.mark.parametrize("kind", ["clean", "white", "babble"])
def test_no_music_found_in_speech_and_noise(kind: str):
    x, segs = qs.reader()
    if kind != "clean":
        noise = qs.white(len(x)) if kind == "white" else qs.babble(len(x))
        x = qs.mix_at_snr(x, noise, 20.0, R, segs)
    share = music_share(x, speech.detect(x, R).segments)
    assert share is None or share < 0.1
