"""Benchmarks (not tests): check latency, check/run throughput per core, peak memory, ffmpeg comparison.

    python tests/tools/benchmark.py all            # everything, prints a markdown summary
    python tests/tools/benchmark.py check|run|memory|ffmpeg

Inputs are built from fixtures/ into a temporary folder (about 30 min of mixed recordings and a
1-hour 48 kHz stereo WAV for the memory figures). Every figure is measured in fresh processes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "fixtures"
VOICEPREP = [sys.executable, "-m", "pipeline.cli"]


def _speech(rate: int, seconds: float, channels: int, seed: int = 0) -> np.ndarray:
    """Real speech (LibriVox reader) with pauses and room noise, tiled to ``seconds``."""
    x, sr = sf.read(FIX / "speech_librivox_16k.wav", dtype="float32")
    room, _ = sf.read(FIX / "noise_room_ami_16k.flac", dtype="float32")
    rng = np.random.default_rng(seed)
    parts, n = [], 0
    while n < seconds * sr:
        parts += [x * np.float32(rng.uniform(0.4, 1.0)), room[: int(rng.uniform(1, 8) * sr)] * np.float32(0.5)]
        n += len(parts[-2]) + len(parts[-1])
    y = np.concatenate(parts)[: int(seconds * sr)]
    if rate != sr:
        y = soxr.resample(y, sr, rate).astype(np.float32)
    if channels == 2:
        y = np.stack([y, 0.8 * y])
    return np.atleast_2d(y)


def _write_av(path: Path, x: np.ndarray, sr: int, fmt: str, codec: str) -> None:
    import av

    layout = "mono" if x.shape[0] == 1 else "stereo"
    with av.open(str(path), "w", format=fmt) as out:
        st: Any = out.add_stream(codec, rate=sr, layout=layout)  # an audio stream (PyAV types it as any kind)
        st.bit_rate = 128_000
        fmt_name = st.codec_context.codec.audio_formats[0].name
        rs = av.AudioResampler(format=fmt_name, layout=layout, rate=sr)
        for i in range(0, x.shape[1], 8192):
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[:, i : i + 8192]), format="fltp", layout=layout)
            fr.sample_rate, fr.pts, fr.time_base = sr, i, Fraction(1, sr)
            for f in rs.resample(fr):
                for p in st.encode(f):
                    out.mux(p)
        for p in st.encode(None):
            out.mux(p)


MIXED = [  # name, seconds, rate, channels
    ("a_10s_mono_16k.wav", 10, 16000, 1),
    ("b_30s_stereo_44k.mp3", 30, 44100, 2),
    ("c_60s_mono_48k.m4a", 60, 48000, 1),
    ("d_2min_stereo_48k.wav", 120, 48000, 2),
    ("e_5min_mono_22k.mp3", 300, 22050, 1),
    ("f_10min_stereo_44k.m4a", 600, 44100, 2),
    ("g_10min_stereo_48k.wav", 600, 48000, 2),
]


def build_mixed(folder: Path) -> float:
    folder.mkdir(parents=True, exist_ok=True)
    total = 0.0
    for k, (name, secs, rate, ch) in enumerate(MIXED):
        p = folder / name
        y = _speech(rate, secs, ch, seed=k)
        if name.endswith(".wav"):
            sf.write(p, y.T, rate, subtype="PCM_16")
        elif name.endswith(".mp3"):
            _write_av(p, y, rate, "mp3", "libmp3lame")
        else:
            _write_av(p, y, rate, "mp4", "aac")
        total += secs
    return total


# As on a user's machine: pip byte-compiles what it installs, so the timed processes read .pyc files
# (an environment with PYTHONDONTWRITEBYTECODE would otherwise recompile the project on every start).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


@contextlib.contextmanager
def scratch(keep: str | None, prefix: str) -> Iterator[Path]:
    """The folder a benchmark builds its inputs in: ``keep`` (made if missing, left in place), or a
    temporary one removed at the end."""
    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix=prefix))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def _compile() -> None:
    subprocess.run([sys.executable, "-m", "compileall", "-q", "pipeline", "stages"], cwd=ROOT, check=True, env=ENV)


def _timed(cmd: list[str]) -> tuple[float, int, str, float]:
    """Wall seconds, peak RSS (KB), stdout and CPU seconds (user + system, all threads) of a fresh process."""
    t = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "%M %U %S", *cmd], capture_output=True, text=True, check=False, cwd=ROOT, env=ENV
    )
    wall = time.perf_counter() - t
    fields = proc.stderr.strip().splitlines()[-1].split() if proc.stderr.strip() else ["-1", "0", "0"]
    return wall, int(fields[0]), proc.stdout, float(fields[1]) + float(fields[2])


def _per_core(audio_s: float, wall_s: float, cpu_s: float) -> float:
    """x real time per core: audio seconds over the larger of wall time and CPU time, so a run
    that kept more than one core busy (helper threads) is not counted as one core's work."""
    return round(audio_s / max(wall_s, cpu_s), 1)


def bench_check(tmp: Path) -> dict[str, float]:
    x, sr = sf.read(FIX / "speech_librivox_16k.wav", dtype="float32")
    one = tmp / "take_20s.wav"
    sf.write(one, x[: 20 * sr], sr, subtype="PCM_16")
    _timed([*VOICEPREP, "check", str(one)])  # warm the file cache once
    walls = [_timed([*VOICEPREP, "check", str(one)])[0] for _ in range(15)]
    mixed = tmp / "mixed"
    if not mixed.exists():
        build_mixed(mixed)
    short = tmp / "short"
    short.mkdir(exist_ok=True)
    for k in range(20):  # a folder of 20 takes of 20 s, WAV and MP3
        y = _speech(48000 if k % 2 else 16000, 20, 1 + k % 2, seed=100 + k)
        sf.write(short / f"take{k:02d}.wav", y.T, 48000 if k % 2 else 16000, subtype="PCM_16")
    wall, _, _, cpu = _timed([*VOICEPREP, "check", str(short)])
    return {
        "check_one_20s_wav_median_s": round(statistics.median(walls), 3),
        "check_one_20s_wav_min_s": round(min(walls), 3),
        "check_folder_20x20s_cpu_s": round(cpu, 2),
        "check_folder_20x20s_x_realtime_per_core": _per_core(400, wall, cpu),
    }


_STEADY = """
import sys, time
from pipeline.cli import one_blas_thread
one_blas_thread()  # as the console script does, before numpy loads
from pathlib import Path
from typing import Any
from pipeline.config import load
from pipeline.runner import Job, process_file
cfg = load()
files = sorted(Path(sys.argv[1]).iterdir())
out = Path(sys.argv[2])
process_file(Job(str(files[1]), str(out / "warm.wav")), cfg)  # imports and first-call set-up
for _ in range(3):
    t, c = time.perf_counter(), time.process_time()
    for f in files:
        process_file(Job(str(f), str(out / (f.stem + ".wav"))), cfg)
    print(time.perf_counter() - t, time.process_time() - c)
"""
REPEATS = 5  # this kind of virtual machine varies by +-20 % from minute to minute: medians are quoted
FFMPEG_CHAIN = (
    "silenceremove=start_periods=1:start_threshold=-50dB:stop_periods=-1:stop_duration=1:stop_threshold=-50dB,"
    "loudnorm=I=-20:TP=-1.5,aresample=24000"
)


def _ffmpeg_pass(mixed: Path, out: Path) -> tuple[float, float]:
    """Wall and CPU seconds of the equivalent ffmpeg command on every file of ``mixed``, one
    process per file (silenceremove + loudnorm + aresample + 16-bit WAV, at most 20 s)."""
    import resource

    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    c = ru.ru_utime + ru.ru_stime
    for f in sorted(mixed.iterdir()):
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-threads", "1", "-i", str(f), "-af", FFMPEG_CHAIN, "-ac", "1", "-t", "20",
             "-c:a", "pcm_s16le", str(out / (f.stem + ".wav"))],
            check=True,
        )
    wall = time.perf_counter() - t
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, ru.ru_utime + ru.ru_stime - c


def bench_run(tmp: Path, *, with_ffmpeg: bool = True) -> dict[str, Any]:
    """Fresh `voiceprep run --jobs 1` over the mixed folder; with ffmpeg, its equivalent pass runs
    right after each repeat, so both see the same state of the machine and the ratio is fair."""
    mixed = tmp / "mixed"
    total = build_mixed(mixed) if not mixed.exists() else sum(m[1] for m in MIXED)
    out = tmp / "out_run"
    with_ffmpeg = with_ffmpeg and shutil.which("ffmpeg") is not None
    runs: list[tuple[float, float]] = []
    ffmpeg: list[tuple[float, float]] = []
    rss = 0
    for _ in range(REPEATS):
        shutil.rmtree(out, ignore_errors=True)
        wall, peak, stdout, cpu = _timed([*VOICEPREP, "run", str(mixed), "--out", str(out), "--jobs", "1", "-q"])
        runs.append((wall, cpu))
        rss = max(rss, peak)
        if with_ffmpeg:
            ffmpeg.append(_ffmpeg_pass(mixed, tmp / "out_ffmpeg"))
    wall, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
    ok = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    # The same files in one warm process: what each further file of a long batch costs, without
    # the start-up a fresh worker spends importing numpy, PyAV, onnxruntime and building the chain.
    steady = subprocess.run(
        [sys.executable, "-c", _STEADY, str(mixed), str(out / "steady")],
        capture_output=True, text=True, check=True, cwd=ROOT, env=ENV,
    )
    rows = [line.split() for line in steady.stdout.splitlines() if line.strip()]
    steady_wall = statistics.median(float(r[0]) for r in rows)
    steady_cpu = statistics.median(float(r[1]) for r in rows)
    result: dict[str, Any] = {
        "run_mixed_steady_wall_s": round(steady_wall, 2),
        "run_mixed_steady_cpu_s": round(steady_cpu, 2),
        "run_mixed_steady_x_realtime_per_core": _per_core(total, steady_wall, steady_cpu),
        "run_mixed_total_audio_s": total,
        "run_mixed_wall_s": round(wall, 2),
        "run_mixed_cpu_s": round(cpu, 2),
        "run_mixed_x_realtime_per_core": _per_core(total, wall, cpu),
        "run_mixed_best_x_realtime_per_core": max(_per_core(total, w, c) for w, c in runs),
        "run_mixed_worst_x_realtime_per_core": min(_per_core(total, w, c) for w, c in runs),
        "run_mixed_peak_rss_mb": round(rss / 1024, 1),
        "run_mixed_summary": ok,
    }
    if ffmpeg:
        fw, fc = statistics.median(r[0] for r in ffmpeg), statistics.median(r[1] for r in ffmpeg)
        result.update({
            "ffmpeg_wall_s": round(fw, 2),
            "ffmpeg_cpu_s": round(fc, 2),
            "ffmpeg_x_realtime_per_core": _per_core(total, fw, fc),
            # per repeat, voiceprep's speed over ffmpeg's (both per core, back to back): its median
            "voiceprep_vs_ffmpeg_speed_ratio": round(statistics.median(
                _per_core(total, w, c) / _per_core(total, a, b) for (w, c), (a, b) in zip(runs, ffmpeg)
            ), 2),
        })
    return result


def bench_ffmpeg(tmp: Path) -> dict[str, float]:
    if shutil.which("ffmpeg") is None:
        return {"ffmpeg": -1.0}
    mixed = tmp / "mixed"
    total = build_mixed(mixed) if not mixed.exists() else sum(m[1] for m in MIXED)
    passes = [_ffmpeg_pass(mixed, tmp / "out_ffmpeg") for _ in range(REPEATS)]
    wall, cpu = statistics.median(p[0] for p in passes), statistics.median(p[1] for p in passes)
    return {
        "ffmpeg_wall_s": round(wall, 2),
        "ffmpeg_cpu_s": round(cpu, 2),
        "ffmpeg_x_realtime_per_core": _per_core(total, wall, cpu),
    }


def bench_memory(tmp: Path) -> dict[str, float]:
    big = tmp / "hour_48k_stereo.wav"
    if not big.exists():
        with sf.SoundFile(big, "w", 48000, 2, subtype="PCM_16") as f:
            block = _speech(48000, 600, 2, seed=7)
            for _ in range(6):
                f.write(block.T)
    _, rss_check, _, _ = _timed([*VOICEPREP, "check", str(big)])
    out = tmp / "out_mem"
    wall, rss_run, _, _ = _timed([*VOICEPREP, "run", str(big), "--out", str(out), "--jobs", "1", "-q"])
    return {
        "hour_wav_size_mb": round(big.stat().st_size / 1e6, 1),
        "check_hour_peak_rss_mb": round(rss_check / 1024, 1),
        "run_hour_peak_rss_mb": round(rss_run / 1024, 1),
        "run_hour_wall_s": round(wall, 1),
        "run_hour_x_realtime": round(3600 / wall, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["all", "check", "run", "ffmpeg", "memory"])
    ap.add_argument("--keep", metavar="DIR", help="build inputs here and keep them (default: a temporary folder)")
    args = ap.parse_args()
    results: dict[str, object] = {"cores": os.cpu_count()}
    _compile()
    with scratch(args.keep, "voiceprep-bench-") as tmp:
        if args.what in ("all", "check"):
            results.update(bench_check(tmp))
        if args.what in ("all", "run"):
            results.update(bench_run(tmp))
        if args.what == "ffmpeg":  # `all` and `run` measure ffmpeg beside each run
            results.update(bench_ffmpeg(tmp))
        if args.what in ("all", "memory"):
            results.update(bench_memory(tmp))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
