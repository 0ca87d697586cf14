"""The quality measures on external real recordings that cannot be committed (docs/quality.md, "Larger evaluations").

    .venv/bin/python tests/tools/eval_external.py speakers SETS        # SETS/manifest.csv: name,label,set (+ SETS/NAME.wav)
    .venv/bin/python tests/tools/eval_external.py snr READERS NOISES   # every reader x noise x SNR, pauses kept and cut

``speakers``: label 0 = one voice, 1 = two or more; sets named ``*unverified*`` or ``*dominant*`` are
reported but left out of precision and recall. ``snr``: each clean reader (first 20 s, 16 kHz) plus
each noise (unit mean power, looped from a seeded offset) at a true SNR = the reader's power over
its detected speech over the noise's mean power; as recorded and with the pauses cut out.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pipeline import speech  # noqa: E402
from pipeline.measures import noise, voices  # noqa: E402
from pipeline.measures.frames import to_rate  # noqa: E402
from stages.quality import Quality  # noqa: E402

R = 16000
SNR_STEPS_DB = (0.0, 2.5, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 40.0)


def read16(path: Path) -> np.ndarray:
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return np.asarray(to_rate(x[:, 0], int(sr)), dtype=np.float64)


def speakers(sets: Path, threshold: float) -> None:
    rows = list(csv.DictReader((sets / "manifest.csv").open()))
    by: dict[str, list[tuple[bool, float | None]]] = defaultdict(list)
    for r in rows:
        x = read16(sets / f"{r['name']}.wav")
        ev = voices.voice_evidence(x, speech.detect(x, R).segments)
        by[r["set"]].append((r["label"] == "1", ev.distance))
        print(f"{r['name']:45s} {r['label']} {ev.distance}", file=sys.stderr)
    print(f"| set | voices | clips | warned (> {threshold:g}) | no value (< 8 chunks) | range |\n|---|---|---|---|---|---|")
    tp = fp = pos = neg = 0
    for name in sorted(by, key=lambda s: (by[s][0][0], s)):
        v = by[name]
        d = [x for _, x in v if x is not None]
        fired = sum(x > threshold for x in d)
        print(f"| {name} | {'2+' if v[0][0] else '1'} | {len(v)} | {fired} | {len(v) - len(d)} | "
              f"{min(d, default=0):.2f}-{max(d, default=0):.2f} |")
        if "unverified" in name or "dominant" in name:
            continue
        if v[0][0]:
            tp, pos = tp + fired, pos + len(v)
        else:
            fp, neg = fp + fired, neg + len(v)
    prec = tp / (tp + fp) if tp + fp else float("nan")
    print(f"\nprecision {prec:.2f}, recall {tp / max(pos, 1):.2f} ({tp}/{pos}), false alarms {fp}/{neg}")


def snr(readers: Path, noises: Path, seed: int) -> None:
    s = Quality()
    clean = {p.stem: read16(p) for p in sorted(readers.iterdir()) if p.suffix in (".wav", ".flac", ".ogg")}
    nz = {}
    for p in sorted(noises.iterdir()):
        if p.suffix in (".wav", ".flac", ".ogg"):
            v = read16(p)
            v = v - v.mean()
            nz[p.stem] = v / np.sqrt(np.mean(v * v))
    table: dict[tuple[str, bool, float], list[float]] = defaultdict(list)
    rng = np.random.default_rng(seed)
    for name, x in clean.items():
        segs = speech.detect(x.astype(np.float32), R).segments
        mask = np.zeros(len(x), dtype=bool)
        for a, b in segs:
            mask[int(a * R) : int(b * R)] = True
        for cut in (False, True):
            sig = x[mask] if cut else x
            m = np.ones(len(sig), dtype=bool) if cut else mask
            sig, m = sig[: 20 * R], m[: 20 * R]
            est = noise.snr(sig, speech.detect(sig.astype(np.float32), R).segments).snr_db
            table[("clean", cut, -1.0)].append(est)
            ps = float(np.mean(sig[m] ** 2))
            for kind, n in nz.items():
                for step in SNR_STEPS_DB:
                    piece = np.resize(np.roll(n, -int(rng.integers(0, len(n)))), len(sig))
                    y = sig + piece * np.sqrt(ps / 10 ** (step / 10))
                    y = y * min(1.0, 0.9 / float(np.max(np.abs(y))))
                    est = noise.snr(y, speech.detect(y.astype(np.float32), R).segments).snr_db
                    table[(kind, cut, step)].append(est)
                    table[("all", cut, step)].append(est)
        print(f"{name} done", file=sys.stderr)

    def rate(v: list[float], under: float) -> str:
        return f"{sum(e < under for e in v) / len(v):.2f}"

    print("| noise | pauses | " + " | ".join(f"{t:g} dB" for t in SNR_STEPS_DB) + " |")
    print("|---|---|" + "---|" * len(SNR_STEPS_DB))
    for kind in [*nz, "all"]:
        for cut in (False, True):
            cells = [f"{rate(table[(kind, cut, t)], s.refuse_snr_db)} / {rate(table[(kind, cut, t)], s.min_snr_db)}"
                     for t in SNR_STEPS_DB]
            print(f"| {kind} | {'cut' if cut else 'kept'} | " + " | ".join(cells) + " |")
    for cut in (False, True):
        v = table[("clean", cut, -1.0)]
        print(f"\nclean readers, pauses {'cut' if cut else 'kept'}: refused {rate(v, s.refuse_snr_db)}, warned or refused "
              f"{rate(v, s.min_snr_db)}, lowest {min(v):.1f} dB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    a = sub.add_parser("speakers")
    a.add_argument("sets", type=Path)
    a.add_argument("--threshold", type=float, default=Quality().max_voice_distance)
    b = sub.add_parser("snr")
    b.add_argument("readers", type=Path)
    b.add_argument("noises", type=Path)
    b.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.what == "speakers":
        speakers(args.sets, args.threshold)
    else:
        snr(args.readers, args.noises, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
