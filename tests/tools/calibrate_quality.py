"""Calibrate the quality stage: degrade real recordings at known strengths, print markdown tables.

    .venv/bin/python tests/tools/calibrate_quality.py            # tables (about 1 minute)
    .venv/bin/python tests/tools/calibrate_quality.py --cost     # also the cost of the measures and of DNSMOS
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import quality_signals as qs

from pipeline import speech
from pipeline.clip import Clip, SourceInfo
from pipeline.config import load as load_config
from pipeline.errors import PipelineError
from pipeline.measures.dnsmos import dnsmos
from pipeline.measures.summary import measure, window_quality_penalty
from stages.quality import Quality

R = 16000
BASES = {"librivox": "speech_librivox_16k.wav", "chan3": "speech_chan3_11k.wav"}


def base(name: str, seconds: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    x = qs.normalize_peak(qs.load(BASES[name])[: int(seconds * R)])
    return x, speech.detect(x, R).segments


def turns(a: np.ndarray, b: np.ndarray, turn_s: float, each_s: float) -> np.ndarray:
    """Two voices taking turns of ``turn_s`` (A B A B ...), ``each_s`` of each."""
    k = int(turn_s * R)
    return np.concatenate([x[i : i + k] for i in range(0, int(each_s * R), k) for x in (a, b) if i < len(x)])


def stage() -> Quality:
    for s in load_config().check:
        if s.name == "quality":
            return s  # type: ignore[return-value]
    return Quality()


def verdict(y: np.ndarray, rate: int = R) -> tuple[dict, str]:
    y2 = np.atleast_2d(y)
    src = SourceInfo("x.wav", "wav", "pcm_s16le", 16, 1, rate, y2.shape[1] / rate, 44 + y2.size * 2)
    clip = Clip(samples=y2, sample_rate=rate, source=src)
    try:
        out = stage()(clip)
    except PipelineError as exc:
        return exc.metrics, "**refused** (InternalError)"
    codes = [w.code for w in out.warnings]
    return dict(out.metrics), ("warn " + ", ".join(f"`{c}`" for c in codes)) if codes else "pass"


def table(title: str, column: str, key: str, rows: list[tuple[str, Callable[[], tuple[np.ndarray, int]]]], note: str) -> None:
    print(f"\n### {title}\n\n{note}\n\n| recording | {column} | verdict (all measures) |\n|---|---|---|")
    for label, make in rows:
        y, rate = make()
        m, v = verdict(y, rate)
        val = m.get(key)
        print(f"| {label} | {val if val is not None else '-'} | {v} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cost", action="store_true", help="also time the measures and DNSMOS")
    args = ap.parse_args()
    s = stage()
    lib, lseg = base("librivox")
    c3, cseg = base("chan3")
    n = len(lib)
    print(f"Base recordings: LibriVox reader (20 s, 16 kHz) and pocketsphinx chan3 (20.9 s, 11 kHz -> 16 kHz). "
          f"Thresholds: the `quality` options in pipeline.yaml ({s}).")

    noise_rows = []
    for kind, make in (("white", qs.white), ("pink", qs.pink), ("babble", lambda k: qs.babble(k))):
        for snr in (0, 5, 10, 20, 30):
            noise_rows.append((f"librivox + {kind} noise at {snr} dB",
                               lambda kind=kind, make=make, snr=snr: (qs.mix_at_snr(lib, make(n), snr, R, lseg), R)))
    noise_rows.append(("librivox, as recorded", lambda: (lib, R)))
    for snr in (5, 10, 20):
        noise_rows.append((f"chan3 + pink noise at {snr} dB",
                           lambda snr=snr: (qs.mix_at_snr(c3, qs.pink(len(c3)), snr, R, cseg), R)))
    table("SNR (`snr_db`)", "snr_db", "snr_db", noise_rows,
          f"`low_snr` under {s.min_snr_db:g} dB, InternalError under {s.refuse_snr_db:g} dB. Added SNR = speech power "
          "over speech segments / noise power. Babble is six other fixture voices at once.")

    music_rows = [(f"librivox + pop song {lv} dB under the speech",
                   lambda lv=lv: (qs.mix_at_snr(lib, qs.music(n), -lv, R, lseg), R)) for lv in (-5, -10, -15, -20, -30)]
    music_rows += [(f"librivox + hold music {lv} dB under the speech",
                    lambda lv=lv: (qs.mix_at_snr(lib, qs.music(n, which="nonspeech_hold_music_8k.flac"), -lv, R, lseg), R))
                   for lv in (-10, -20, -30)]
    music_rows += [("librivox + babble at 20 dB", lambda: (qs.mix_at_snr(lib, qs.babble(n), 20, R, lseg), R)),
                   ("librivox, as recorded", lambda: (lib, R))]
    table("Music under the speech (`music_share`)", "music_share", "music_share", music_rows,
          f"`music_bed` when held notes sound in more than {s.max_music_share:g} of the pauses; InternalError when "
          f"the SNR is also under {s.min_snr_db:g} dB. `-` means too few pauses to tell (under 1 s).")

    hum_rows = [(f"chan3 + {f} Hz hum at {lv} dB", lambda f=f, lv=lv: (qs.add_hum(c3, R, f, lv, cseg), R))
                for f in (50, 60) for lv in (-20, -30, -40, -50)]
    hum_rows += [("chan3, as recorded", lambda: (c3, R)), ("librivox, as recorded", lambda: (lib, R))]
    table("Mains hum (`hum_db`, with `hum_hz`/`hum_prominence_db`)", "hum_db", "hum_db", hum_rows,
          f"`hum` when a 50/60 Hz line stands {s.min_hum_prominence_db:g} dB over its surroundings and the lines "
          f"carry more than {s.max_hum_db:g} dB of the signal's power.")

    clip_rows = [(f"librivox clipped, {100 * f:g} % of samples", lambda f=f: (qs.clip_fraction(lib, f), R))
                 for f in (0.0001, 0.001, 0.01, 0.05)] + [("librivox, as recorded", lambda: (lib, R))]
    table("Clipping (`clipped_ratio`)", "clipped_ratio", "clipped_ratio", clip_rows,
          f"`clipping` over {s.max_clipped_ratio:g} of samples on flat tops.")

    ramp_rows = [(f"librivox with a {d} dB level ramp", lambda d=d: (qs.ramp(lib, d), R)) for d in (0, 6, 12, 18, 24)]
    ramp_rows += [("AMI meeting (several speakers, far mic)", lambda: (qs.load("meeting_ami_trn05_16k.flac")[: 20 * R], R))]
    table("Loudness steadiness (`loudness_spread_lu`)", "loudness_spread_lu", "loudness_spread_lu", ramp_rows,
          f"`unsteady_loudness` over {s.max_loudness_spread_lu:g} LU, InternalError over {s.refuse_loudness_spread_lu:g} LU "
          "(1 s K-weighted loudness over speech, 95th minus 10th percentile).")

    al = qs.load("speech_allison_8k.flac", None)[: 8000 * 20]
    ch = qs.load("speech_chan3_11k.wav", None)
    bw_rows = [
        ("Allison (8 kHz phone prompt) resampled to 44.1 kHz", lambda: (qs.narrowband(al, 8000, 44100), 44100)),
        ("chan3 (11 kHz) resampled to 48 kHz", lambda: (qs.narrowband(ch, 11025, 48000), 48000)),
        ("librivox (16 kHz) resampled to 44.1 kHz", lambda: (qs.narrowband(lib, R, 44100), 44100)),
        ("librivox, 16 kHz", lambda: (lib, R)),
    ]
    table("Effective bandwidth (`bandwidth_hz`)", "bandwidth_hz", "bandwidth_hz", bw_rows,
          f"`narrowband` under {s.min_bandwidth_hz:g} Hz (and under 80 % of the file's Nyquist frequency).")

    awb, slt = qs.load("speech_arctic_awb_16k.wav"), qs.load("speech_arctic_slt_16k.wav")
    al16 = qs.load("speech_allison_8k.flac")
    spk_rows = [
        ("ARCTIC awb + slt (male then female)", lambda: (np.concatenate([awb, slt]), R)),
        ("ARCTIC slt + awb", lambda: (np.concatenate([slt, awb]), R)),
        ("librivox 10 s + Allison 10 s", lambda: (np.concatenate([lib[: 10 * R], al16[: 10 * R]]), R)),
        ("AMI meeting, first 20 s", lambda: (qs.load("meeting_ami_trn05_16k.flac")[: 20 * R], R)),
        ("ARCTIC awb + slt + awb + slt (turns)", lambda: (np.concatenate([awb, slt, awb, slt]), R)),
        ("turns of 2 s: awb / slt (man, woman), 4 s each", lambda: (turns(awb, slt, 2.0, 4.0), R)),
        ("turns of 2 s: librivox / Allison (man, woman), 10 s each", lambda: (turns(lib, al16, 2.0, 10.0), R)),
        ("turns of 3 s: librivox / Allison (man, woman), 12 s each", lambda: (turns(lib, al16, 3.0, 12.0), R)),
        ("turns of 2 s: chan3 / Allison (man, woman), 10 s each", lambda: (turns(c3, al16, 2.0, 10.0), R)),
        ("turns of 2 s: Allison / awb (woman, man), 4 s each", lambda: (turns(al16, awb, 2.0, 4.0), R)),
        ("turns of 2 s: librivox / awb (two men), 4 s each", lambda: (turns(lib, awb, 2.0, 4.0), R)),
        ("turns of 2 s: Allison / slt (two women), 4 s each", lambda: (turns(al16, slt, 2.0, 4.0), R)),
        ("librivox 8 s + awb (two men)", lambda: (np.concatenate([lib[: 8 * R], awb]), R)),
        ("librivox (one reader)", lambda: (lib, R)),
        ("librivox + pink noise at 20 dB", lambda: (qs.mix_at_snr(lib, qs.pink(n), 20, R, lseg), R)),
        ("librivox + babble at 20 dB", lambda: (qs.mix_at_snr(lib, qs.babble(n), 20, R, lseg), R)),
        ("librivox with a 12 dB level ramp", lambda: (qs.ramp(lib, 12), R)),
        ("Allison 20 s (one voice)", lambda: (al16[: 20 * R], R)),
        ("Allison 20 s + white noise at 20 dB", lambda: (qs.mix_at_snr(al16[: 20 * R], qs.white(20 * R), 20, R,
                                                                       speech.detect(al16[: 20 * R], R).segments), R)),
        ("chan3 (one reader)", lambda: (c3, R)),
        ("chan3 + pink noise at 20 dB", lambda: (qs.mix_at_snr(c3, qs.pink(len(c3)), 20, R, cseg), R)),
    ]
    table("A second voice (`speaker_change`)", "speaker_change", "speaker_change", spk_rows,
          f"`multiple_speakers` over {s.max_speaker_change:g}: the larger of a change-point test (BIC-penalised "
          "gain, nats per frame, of two MFCC Gaussians split at the best change point over one) and a turn test "
          "(cross-validated gain of two groups of 0.75 s chunks over one, less its chance level).")

    if args.cost:
        cost(lib, lseg)
    return 0


def cost(x: np.ndarray, segs: np.ndarray) -> None:
    def best(f: Callable[[], object], k: int = 7) -> float:
        f()
        times = []
        for _ in range(k):
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
        return 1000 * float(np.median(times))

    print("\n### Cost (median of 7 runs, this machine)\n\n| what | ms |\n|---|---|")
    print(f"| all measures, 20 s at 16 kHz | {best(lambda: measure(x, R, segs)):.0f} |")
    x44 = qs.narrowband(x, R, 44100)
    print(f"| all measures, 20 s at 44.1 kHz | {best(lambda: measure(x44, 44100, segs)):.0f} |")
    print(f"| window_quality_penalty, 15 s at 16 kHz | {best(lambda: window_quality_penalty(x[: 15 * R], R, segs)):.0f} |")
    try:
        t = time.perf_counter()
        dnsmos(x)
        first = 1000 * (time.perf_counter() - t)
        print(f"| DNSMOS, first call (imports librosa, loads ONNX) | {first:.0f} |")
        print(f"| DNSMOS, 20 s at 16 kHz | {best(lambda: dnsmos(x), 3):.0f} |")
        print(f"\nDNSMOS of the clean reader: {dnsmos(x)}")
    except RuntimeError as exc:
        print(f"| DNSMOS | not installed ({exc}) |")


if __name__ == "__main__":
    raise SystemExit(main())
