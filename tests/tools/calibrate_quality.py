"""Calibration tables of the quality verdict: precision and recall of each warning and refusal on real recordings.

    .venv/bin/python tests/tools/calibrate_quality.py            # print the tables (about 40 s)
    .venv/bin/python tests/tools/calibrate_quality.py --write    # rewrite them in docs/quality.md
    .venv/bin/python tests/tools/calibrate_quality.py --cost     # also the cost of the measures

Every clip is built from the real recordings in fixtures/ (readers, the AMI meeting and room, the
music recordings) with a fault added at a known strength; tests/test_calibration.py regenerates
the tables and compares them with docs/quality.md. Each measure is judged with the thresholds of
the `quality` options in pipeline.yaml, exactly as the stage applies them.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import quality_signals as qs  # noqa: E402

from pipeline import speech  # noqa: E402
from pipeline.config import load as load_config  # noqa: E402
from pipeline.measures import noise, spectrum, voices  # noqa: E402
from stages.quality import Quality  # noqa: E402
from stages.repair import remove_hum  # noqa: E402

R = 16000
DOC = ROOT / "docs" / "quality.md"
BEGIN, END = "<!-- calibration:begin -->", "<!-- calibration:end -->"


def stage() -> Quality:
    for s in load_config().check:
        if isinstance(s, Quality):
            return s
    return Quality()


@dataclass(frozen=True)
class Case:
    """One clip: its label (True: the fault is there, False: it is not, None: between the two,
    reported but not counted), the group it belongs to and whether the verdict fired."""

    group: str
    label: bool | None
    fired: bool


def readers() -> dict[str, np.ndarray]:
    """Single real readers, 20 s each (peak 0.7): two English-speaking men, an Italian man, and
    one woman in English and in Spanish (her Spanish take has the flatter amplitudes)."""
    out = {
        "librivox": qs.load("speech_librivox_16k.wav")[: 20 * R],
        "chan3": qs.load("speech_chan3_11k.wav")[: 20 * R],
        "carlo-it": qs.load("speech_carlo_it_8k.flac")[: 20 * R],
        "allison": qs.load("speech_allison_8k.flac")[: 20 * R],
        "allison-es": qs.load("speech_allison_es_8k.flac")[: 20 * R],
    }
    return {k: qs.normalize_peak(v) for k, v in out.items()}


def without_pauses(x: np.ndarray, segs: np.ndarray) -> np.ndarray:
    """The speech segments joined end to end: the VAD hears speech throughout."""
    return np.concatenate([x[int(a * R) : int(b * R)] for a, b in segs])


def at_snr(x: np.ndarray, nz: np.ndarray, snr_db: float, segs: np.ndarray) -> np.ndarray:
    """``x`` plus ``nz`` at ``snr_db``: speech power over the speech segments, over the noise's
    median power in 0.5 s blocks (its level most of the time: a door slam does not make a room loud)."""
    blocks = np.asarray(nz[: len(nz) // 8000 * 8000], dtype=np.float64).reshape(-1, 8000)
    typical = float(np.median(np.mean(blocks * blocks, axis=1)))
    ps = qs.speech_power(x, R, segs)
    return (x + np.sqrt(ps / (typical * 10 ** (snr_db / 10))) * nz[: len(x)]).astype(np.float32)


def noises(n: int) -> dict[str, np.ndarray]:
    room = qs.load("noise_room_ami_16k.flac")
    meeting = qs.load("meeting_ami_trn05_16k.flac")
    return {
        "pink": qs.pink(n),
        "babble (6 fixture voices)": qs.babble(n),
        "AMI meeting (4 talkers, far mic)": np.resize(meeting, n),
        "AMI room": np.resize(room, n),
    }


SNR_STEPS_DB = (0.0, 5.0, 10.0, 15.0, 20.0, 30.0)


def score(cases: Iterable[Case]) -> tuple[int, int, int, int, int]:
    """True positives, false positives, false negatives, true negatives, between (uncounted)."""
    tp = fp = fn = tn = between = 0
    for c in cases:
        if c.label is None:
            between += c.fired
        elif c.label:
            tp, fn = tp + c.fired, fn + (not c.fired)
        else:
            fp, tn = fp + c.fired, tn + (not c.fired)
    return tp, fp, fn, tn, between


def ratio(a: int, b: int) -> str:
    return f"{a / b:.2f}" if b else "-"


def pr_table(rows: list[tuple[str, list[Case]]]) -> list[str]:
    out = ["| verdict | clips | precision | recall | false alarms | misses |", "|---|---|---|---|---|---|"]
    for name, cases in rows:
        tp, fp, fn, tn, _ = score(cases)
        out.append(f"| {name} | {tp + fp + fn + tn} | {ratio(tp, tp + fp)} | {ratio(tp, tp + fn)} | {fp} of {fp + tn} | "
                   f"{fn} of {tp + fn} |")
    return out


def by_group(cases: list[Case], title: str) -> list[str]:
    groups: dict[str, list[Case]] = {}
    for c in cases:
        groups.setdefault(c.group, []).append(c)
    out = [f"| {title} | clips | fired |", "|---|---|---|"]
    for g, cs in groups.items():
        out.append(f"| {g} | {len(cs)} | {sum(c.fired for c in cs)} |")
    return out


def snr_section(s: Quality) -> list[str]:
    refuse: list[Case] = []
    warn: list[Case] = []
    per: dict[str, dict[float, list[float]]] = {}
    for x in readers().values():
        segs = speech.detect(x, R).segments
        for mode, clean in (("pauses kept", x), ("speech throughout", without_pauses(x, segs))):
            csegs = speech.detect(clean, R).segments
            for kind, nz in noises(len(clean)).items():
                for added in SNR_STEPS_DB:
                    y = at_snr(clean, nz, added, csegs)
                    est = noise.snr(y, speech.detect(y, R).segments).snr_db
                    per.setdefault(f"{kind}, {mode}", {}).setdefault(added, []).append(est)
                    refuse.append(Case(kind, True if added <= 5 else (None if added == 10 else False),
                                       est < s.refuse_snr_db))
                    warn.append(Case(kind, True if added <= 10 else (None if added < 30 else False), est < s.min_snr_db))
            est = noise.snr(clean, csegs).snr_db
            per.setdefault(f"clean reader, {mode}", {}).setdefault(-1.0, []).append(est)
            refuse.append(Case("clean", False, est < s.refuse_snr_db))
            warn.append(Case("clean", False, est < s.min_snr_db))

    def count(values: list[float], under: float) -> str:
        return f"{sum(v < under for v in values)}/{len(values)}"

    rows = ["| noise, pauses | refused at 0-5 dB | refused at 10 dB | refused at 15-30 dB | warned or refused at 0-10 dB | "
            "warned at 30 dB | median `snr_db` at 0 / 5 / 15 / 30 dB |", "|---|---|---|---|---|---|---|"]
    for name, by in per.items():
        if -1.0 in by:
            v = by[-1.0]
            rows.append(f"| {name} | | | {count(v, s.refuse_snr_db)} | | {count(v, s.min_snr_db)} | "
                        f"{np.median(v):.1f} (as recorded) |")
            continue
        low, mid, high = by[0.0] + by[5.0], by[10.0], by[15.0] + by[20.0] + by[30.0]
        meds = " / ".join(f"{np.median(by[a]):.1f}" for a in (0.0, 5.0, 15.0, 30.0))
        rows.append(f"| {name} | {count(low, s.refuse_snr_db)} | {count(mid, s.refuse_snr_db)} | "
                    f"{count(high, s.refuse_snr_db)} | {count(low + mid, s.min_snr_db)} | {count(by[30.0], s.min_snr_db)} | "
                    f"{meds} |")
    return [
        "### Noise: `InternalError` and `low_snr` (`snr_db`)",
        "",
        f"Refused under {s.refuse_snr_db:g} dB, `low_snr` under {s.min_snr_db:g} dB. Five readers (LibriVox, chan3, "
        "Carlo in Italian, Allison in English and in Spanish), each as recorded and with its pauses cut out (the VAD then hears speech throughout), "
        "plus four noises at 0-30 dB SNR (speech power over the speech segments, over the noise's median power in "
        "0.5 s blocks: its level most of the time; the AMI room's mean is 9 dB over it, from a few loud events). "
        "The refusal should fire at 0-5 dB and never at 15 dB or more or on a clean reader (10 dB is between: "
        "listed, not counted); `low_snr` (or the refusal) at 0-10 dB and never at 30 dB or on a clean reader.",
        "",
        *pr_table([
            ("InternalError: pink and babble noise", [c for c in refuse if not c.group.startswith("AMI")]),
            ("InternalError: all four (AMI meeting and room too)", refuse),
            ("`low_snr` or InternalError: pink and babble noise", [c for c in warn if not c.group.startswith("AMI")]),
            ("`low_snr` or InternalError: all four", warn),
        ]),
        "",
        *rows,
        "",
        "The AMI recordings are interference rather than noise: the room's own floor (what stays between its events) is "
        "13 dB under its median level and its amplitudes are as peaked as speech's (WADA-SNR of the room alone: 27 dB); "
        "the meeting is far-field speech with pauses (its floor 34 dB under its median). Neither estimate can call "
        "such a background noise; the room at 0-5 dB still gets `low_snr` every time.",
    ]


def pairs() -> list[tuple[str, bool | None, np.ndarray]]:
    """One voice (False) and two voices (True), from real readers."""
    lib = qs.normalize_peak(qs.load("speech_librivox_16k.wav"))
    c3 = qs.normalize_peak(qs.load("speech_chan3_11k.wav"))
    al = qs.normalize_peak(qs.load("speech_allison_8k.flac"))
    awb = qs.normalize_peak(qs.load("speech_arctic_awb_16k.wav"))
    slt = qs.normalize_peak(qs.load("speech_arctic_slt_16k.wav"))
    num = qs.normalize_peak(qs.load("speech_numbers_16k.wav"))
    wiki = qs.normalize_peak(qs.load("speech_wikipedia_stereo_44k.wav"))
    carlo = qs.normalize_peak(qs.load("speech_carlo_it_8k.flac"))
    june = qs.normalize_peak(qs.load("speech_june_fr_8k.flac"))
    al_es = qs.normalize_peak(qs.load("speech_allison_es_8k.flac"))
    meeting = qs.load("meeting_ami_trn05_16k.flac")

    def turns(a: np.ndarray, b: np.ndarray, turn_s: float, total_s: float) -> np.ndarray:
        k = int(turn_s * R)
        parts = []
        for i in range(0, int(total_s * R / 2), k):
            parts += [a[i % len(a) : i % len(a) + k], b[i % len(b) : i % len(b) + k]]
        return np.concatenate(parts)

    segs = speech.detect(lib, R).segments
    return [
        ("one: LibriVox, 20 s", False, lib[: 20 * R]),
        ("one: LibriVox, 26 s", False, lib),
        ("one: chan3, 21 s", False, c3),
        ("one: Allison, 20 s", False, al[: 20 * R]),
        ("one: Allison, 60 s", False, al[: 60 * R]),
        ("one: Allison, 73 s", False, al),
        ("one: LibriVox with a 12 dB level ramp", False, qs.ramp(lib[: 20 * R], 12.0)),
        ("one: LibriVox at -30 dB", False, lib[: 20 * R] * np.float32(0.03)),
        ("one: LibriVox + babble at 20 dB", False, qs.mix_at_snr(lib, qs.babble(len(lib)), 20.0, R, segs)),
        ("one: LibriVox + AMI room at 15 dB", False, qs.mix_at_snr(lib, np.resize(qs.load("noise_room_ami_16k.flac"),
                                                                                 len(lib)), 15.0, R, segs)),
        ("one: Wikipedia example, 6 s", False, wiki),
        ("one: Carlo (Italian), 30 s", False, carlo),
        ("one: June (French), 30 s", False, june),
        ("one: Allison, English 10 s then Spanish 10 s", False, np.concatenate([al[: 10 * R], al_es[: 10 * R]])),
        ("two: turns of 2 s, Carlo / LibriVox (two men)", True, turns(carlo, lib, 2.0, 20.0)),
        ("two: turns of 2 s, June / Allison (two women)", True, turns(june, al, 2.0, 20.0)),
        ("two: Carlo then June (man, woman)", True, np.concatenate([carlo[: 10 * R], june[: 10 * R]])),
        ("two: LibriVox then Allison (man, woman)", True, np.concatenate([lib[: 10 * R], al[: 10 * R]])),
        ("two: chan3 then LibriVox (two men)", True, np.concatenate([c3[: 10 * R], lib[: 10 * R]])),
        ("two: LibriVox 8 s then awb 4 s (two men)", True, np.concatenate([lib[: 8 * R], awb])),
        ("two: awb then slt (man, woman)", True, np.concatenate([awb, slt])),
        ("two: turns of 2 s, LibriVox / Allison", True, turns(lib, al, 2.0, 20.0)),
        ("two: turns of 3 s, LibriVox / Allison", True, turns(lib, al, 3.0, 20.0)),
        ("two: turns of 2 s, chan3 / Allison", True, turns(c3, al, 2.0, 20.0)),
        ("two: turns of 2 s, LibriVox / chan3 (two men)", True, turns(lib, c3, 2.0, 20.0)),
        ("two: turns of 4 s, LibriVox / chan3 (two men)", True, turns(lib, c3, 4.0, 20.0)),
        ("two: turns of 2 s, LibriVox / awb (two men)", True, turns(lib, awb, 2.0, 8.0)),
        ("two: turns of 2 s, Allison / slt (two women)", True, turns(al, slt, 2.0, 6.0)),
        ("two: Allison 16 s with numbers 4 s inside", True, np.concatenate([al[: 8 * R], num, al[8 * R : 16 * R]])),
        ("two or more: AMI meeting, 20 s (far mic)", None, meeting[: 20 * R]),
    ]


def speaker_section(s: Quality) -> list[str]:
    cases: list[Case] = []
    rows = ["| recording | voice_distance | warned |", "|---|---|---|"]
    for name, label, y in pairs():
        ev = voices.voice_evidence(y, speech.detect(y, R).segments)
        fired = ev.distance is not None and ev.distance > s.max_voice_distance
        cases.append(Case(name, label, fired))
        rows.append(f"| {name} | {'-' if ev.distance is None else f'{ev.distance:.2f}'} | {'yes' if fired else 'no'} |")
    return [
        "### A second voice: `multiple_speakers` (`voice_distance`)",
        "",
        f"Warned over {s.max_voice_distance:g}. `-`: under 8 chunks of speech, no value. The meeting is between "
        "(several far-field voices, a documented miss): listed, not counted.",
        "",
        *pr_table([("`multiple_speakers`", cases)]),
        "",
        *rows,
    ]


def hum_section(s: Quality) -> list[str]:
    check: list[Case] = []
    after: list[Case] = []

    def warned(y: np.ndarray) -> bool:
        h = spectrum.measure_hum(y, R)
        return h.f0_hz is not None and h.peak_prominence_db >= s.min_hum_prominence_db and h.level_db() > s.max_hum_db

    lines_left = lines_in = 0
    for name, x in readers().items():
        segs = speech.detect(x, R).segments
        own = warned(x)
        check.append(Case(f"clean: {name}", name == "librivox", own))  # it carries a real line
        y, _ = remove_hum(x[None], R)
        after.append(Case(f"clean: {name}", False, warned(y[0])))
        for freq in (50.0, 55.1, 59.8, 60.0):
            for level in (-20.0, -30.0, -40.0):
                hummy = qs.add_hum(x, R, freq, level, segs, harmonics=10)
                check.append(Case(f"{freq:g} Hz at {level:g} dB", True, warned(hummy)))
                y, _ = remove_hum(hummy[None], R)
                after.append(Case(f"{freq:g} Hz at {level:g} dB", False, warned(y[0])))
                found = spectrum.measure_hum(hummy, R).lines_hz
                left, _ = spectrum.residual_lines(y[0], R, found)
                lines_in += len(found)
                lines_left += int(np.sum(left >= s.min_hum_prominence_db))
    return [
        "### Mains hum: `hum` (`hum_hz`, `hum_prominence_db`, `hum_db`) and the repair",
        "",
        f"Warned when a line stands {s.min_hum_prominence_db:g} dB over its surroundings and the lines that do "
        f"carry more than {s.max_hum_db:g} dB of the signal's power. Five readers, hum of 10 harmonics at 50, "
        "55.1 (a 48 kHz take played at 44.1 kHz), 59.8 and 60 Hz, 20-40 dB under the speech. The LibriVox reader "
        "carries a real 60 Hz line (21 dB over its surroundings, 27 dB under the voice): a positive as recorded. "
        "`check` judges the audio as it is; `run` judges it after the repair's notches, where every case is a "
        "negative (nothing audible may remain).",
        "",
        *pr_table([("`hum` in `check`", check), ("`hum` after the repair (`run`)", after)]),
        "",
        f"Lines the inputs carried (6 dB or more over their surroundings): {lines_in}; still "
        f"{s.min_hum_prominence_db:g} dB or more out after the repair: {lines_left}.",
    ]


def simple_section(s: Quality) -> list[str]:
    """Clipping, loudness, bandwidth and music: their warnings on real readers with the fault added."""
    from pipeline.measures.loudness import loudness_spread
    from pipeline.measures.music import music_share

    rd = readers()
    clip_cases, loud_warn, loud_refuse, music_cases, band_cases = [], [], [], [], []
    for name, x in rd.items():
        segs = speech.detect(x, R).segments
        for f in (0.0, 0.001, 0.01):
            y = qs.clip_fraction(x, f) if f else x
            from pipeline.measures.noise import clipping

            clip_cases.append(Case(name, f > 0, clipping(y)[0] > s.max_clipped_ratio))
        for span in (0.0, 6.0, 12.0, 18.0, 24.0):
            y = qs.ramp(x, span)
            spread, _ = loudness_spread(y, R, segs)
            loud_warn.append(Case(name, True if span >= 12 else (False if span == 0 else None),
                                  spread > s.max_loudness_spread_lu))
            loud_refuse.append(Case(name, True if span >= 24 else (False if span <= 12 else None),
                                    spread > s.refuse_loudness_spread_lu))
        for which in ("nonspeech_music_stereo_44k.flac", "nonspeech_hold_music_8k.flac"):
            for under in (20.0, 30.0):
                y = qs.mix_at_snr(x, qs.music(len(x), which=which), under, R, segs)
                m = music_share(y, speech.detect(y, R).segments)
                music_cases.append(Case(name, True, m is not None and m > s.max_music_share))
        m = music_share(x, segs)
        music_cases.append(Case(name, False, m is not None and m > s.max_music_share))
        y = qs.mix_at_snr(x, qs.babble(len(x)), 20.0, R, segs)
        m = music_share(y, speech.detect(y, R).segments)
        music_cases.append(Case(name, False, m is not None and m > s.max_music_share))
    from pipeline.measures.spectrum import effective_bandwidth

    for name, src, rate in (("Allison", "speech_allison_8k.flac", 8000), ("chan3", "speech_chan3_11k.wav", 11025),
                            ("LibriVox", "speech_librivox_16k.wav", 16000)):
        x = qs.load(src, None)[: 20 * rate]
        for to in (44100, 48000):
            y = qs.narrowband(x, rate, to)
            bw = effective_bandwidth(y, to, speech.detect(y, to).segments)
            band_cases.append(Case(name, rate < 16000, bw < s.min_bandwidth_hz and bw < 0.4 * to))
    return [
        "### Clipping, loudness, music and bandwidth",
        "",
        f"Same readers. Clipping: 0, 0.1 and 1 % of samples on flat tops (`clipping` over {s.max_clipped_ratio:g}). "
        f"Loudness: level ramps of 0-24 dB (`unsteady_loudness` over {s.max_loudness_spread_lu:g} LU: positive from 12 "
        f"dB, negative at 0; InternalError over {s.refuse_loudness_spread_lu:g} LU: positive at 24 dB, negative up to "
        "12). Music: a pop song and hold music 20 and 30 dB under the speech, against the reader alone and with "
        f"babble at 20 dB (`music_bed` over {s.max_music_share:g} of the pauses). Bandwidth: 8 and 11 kHz sources "
        "dressed as 44.1/48 kHz against a 16 kHz one (`narrowband`).",
        "",
        *pr_table([("`clipping`", clip_cases), ("`unsteady_loudness` or InternalError", loud_warn),
                   ("InternalError (loudness)", loud_refuse), ("`music_bed`", music_cases),
                   ("`narrowband`", band_cases)]),
    ]


def tables() -> str:
    s = stage()
    parts: list[list[str]] = [snr_section(s), speaker_section(s), hum_section(s), simple_section(s)]
    return "\n\n".join("\n".join(p) for p in parts) + "\n"


def write(text: str) -> None:
    doc = DOC.read_text(encoding="utf-8")
    new = re.sub(rf"({re.escape(BEGIN)}\n).*?({re.escape(END)})", lambda m: m.group(1) + text + m.group(2), doc,
                 flags=re.S)
    DOC.write_text(new, encoding="utf-8")


def committed() -> str:
    """The tables as committed in docs/quality.md."""
    doc = DOC.read_text(encoding="utf-8")
    m = re.search(rf"{re.escape(BEGIN)}\n(.*?){re.escape(END)}", doc, flags=re.S)
    return m.group(1) if m else ""


def cost() -> None:
    from pipeline.measures.summary import measure, window_quality_penalty

    x = qs.normalize_peak(qs.load("speech_librivox_16k.wav")[: 20 * R])
    segs = speech.detect(x, R).segments

    def best(f: Callable[[], object], k: int = 7) -> float:
        f()
        times = []
        for _ in range(k):
            t = time.process_time()
            f()
            times.append(time.process_time() - t)
        return 1000 * float(np.median(times))

    print("\n| what (20 s at 16 kHz, CPU time, median of 7) | ms |\n|---|---|")
    print(f"| all measures | {best(lambda: measure(x, R, segs)):.0f} |")
    print(f"| voice_evidence (embeddings, 2-means) | {best(lambda: voices.voice_evidence(x, segs)):.0f} |")
    print(f"| snr (floor, WADA, HNR when needed) | {best(lambda: noise.snr(x, segs)):.0f} |")
    print(f"| measure_hum | {best(lambda: spectrum.measure_hum(x, R)):.0f} |")
    print(f"| remove_hum (LibriVox's real line) | {best(lambda: remove_hum(x[None], R), 3):.0f} |")
    print(f"| window_quality_penalty, 15 s | {best(lambda: window_quality_penalty(x[: 15 * R], R, segs)):.0f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rewrite the tables in docs/quality.md")
    ap.add_argument("--cost", action="store_true", help="also time the measures")
    args = ap.parse_args()
    text = tables()
    if args.write:
        write(text)
    else:
        print(text)
    if args.cost:
        cost()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
