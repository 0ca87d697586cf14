"""Benchmark (not a test): a 1,000-take report page, its size, and how fast headless Chromium renders it.

    python tests/tools/report_page_bench.py [--takes 1000] [--repeats 7] [--keep DIR]
    python tests/tools/report_page_bench.py --screenshot docs/report.png   # the picture in docs/report.md (then pngquant it)

Builds report lines with plot data from real recordings (fixtures/ through `voiceprep run` and
`check`, as tests/report_lines.py does), repeats them under distinct names with varied measures
up to --takes, writes the page, then loads it in headless Chromium (DevTools protocol) --repeats
times, each in a new tab. "ready" is the page's own time from navigation start until the first
screen of takes is drawn and the page is idle (<html data-ready-ms>); "scroll" is the time from
jumping to the end of the list until the last take is drawn.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

import report_lines as rl  # noqa: E402
from chromium import Browser, executable  # noqa: E402

from pipeline.config import load  # noqa: E402
from pipeline.report_page import write_page  # noqa: E402


def real_lines(work: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every fixture through `run`, plus one reader whose pauses must be shortened, and six of the
    inputs as `check` lines: real verdicts, envelopes and speech maps."""
    inputs = work / "in"
    inputs.mkdir()
    for f in sorted(rl.FIXTURES.iterdir()):
        if f.suffix in (".wav", ".flac"):
            (inputs / f.name).write_bytes(f.read_bytes())
    rl.spaced_speech(inputs / "spaced_reader.wav")
    lines = rl.run_lines([inputs], work / "out", work / "report.jsonl")
    return lines, rl.check_lines(sorted(inputs.iterdir())[:6])


def batch(lines: list[dict[str, Any]], takes: int, seed: int = 15) -> list[dict[str, Any]]:
    """``takes`` lines cycled from ``lines``, each under its own name, its measures moved a little."""
    rng = random.Random(seed)
    out = []
    for k in range(takes):
        line = copy.deepcopy(lines[k % len(lines)])
        name = Path(line["input"]).name
        line["input"] = f"recordings/speaker_{k // 20:03d}/{k:04d}_{name}"
        if line.get("output"):
            line["output"] = f"clean/speaker_{k // 20:03d}/{k:04d}_{Path(name).stem}.wav"
        m = line["metrics"]
        for key, spread in (("snr_db", 12.0), ("speech_s", 1.5), ("input_speech_s", 6.0), ("gain_db", 8.0)):
            if isinstance(m.get(key), (int, float)):
                m[key] = round(max(m[key] + rng.uniform(-spread, spread), 0.0), 2)
        out.append(line)
    return out


SHOWN_FIRST = ("spaced_reader.wav", "speech_arctic_awb_16k.wav", "meeting_ami_trn05_16k.flac")


async def screenshot(run: list[dict[str, Any]], work: Path, target: Path) -> None:
    """The top of the page of the real `run` lines (three telling takes first), 1100 px wide."""
    first = [x for name in SHOWN_FIRST for x in run if Path(x["input"]).name == name]
    # paths as a user in `work` would have them: in/..., out/...
    shown = [
        {**x, **{k: str(Path(x[k]).relative_to(work)) for k in ("input", "output") if x.get(k)}}
        for x in first + [x for x in run if x not in first]
    ]
    page = work / "report.html"
    write_page(page, shown, load(), title="voiceprep report: in/", source_base=work)
    async with Browser(width=1100, height=1500) as browser:
        tab = await browser.open(page)
        await tab.wait_for("document.documentElement.getAttribute('data-ready') === '1'")
        await tab.screenshot(target)


async def measure(page_path: Path, repeats: int) -> tuple[list[float], list[float], list[str]]:
    ready, scroll, problems = [], [], []
    async with Browser() as browser:
        for _ in range(repeats):
            page = await browser.open(page_path)
            ready.append(float(await page.wait_for("document.documentElement.getAttribute('data-ready-ms')")))
            problems += page.exceptions + page.console_errors
            problems += await page.evaluate("JSON.parse(document.documentElement.getAttribute('data-errors'))")
            start = time.perf_counter()
            await page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
            await page.wait_for("document.querySelector('#takes > article:last-child').hasAttribute('data-drawn')")
            scroll.append(1000 * (time.perf_counter() - start))
            await page.close()
    return ready, scroll, problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--takes", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--keep", type=Path, help="write the page here and keep it")
    ap.add_argument("--screenshot", type=Path, metavar="PNG", help="only take the documentation's screenshot")
    args = ap.parse_args()
    if not executable():
        sys.stderr.write("chromium is not installed (apt-get install chromium)\n")
        return 2
    with tempfile.TemporaryDirectory(prefix="voiceprep-page-") as tmp:
        work = Path(tmp)
        run, checked = real_lines(work)
        if args.screenshot:
            asyncio.run(screenshot(run, work, args.screenshot))
            print(f"{args.screenshot}: {args.screenshot.stat().st_size / 1000:.0f} KB")
            return 0
        lines = run + checked
        config = load()
        out_dir = args.keep or work
        out_dir.mkdir(parents=True, exist_ok=True)
        empty = write_page(work / "empty.html", [], config)
        page = out_dir / f"report_{args.takes}.html"
        takes = batch(lines, args.takes)
        t0, c0 = time.perf_counter(), time.process_time()
        size = write_page(page, takes, config, title=f"{args.takes} takes")
        build_s, build_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        ready, scroll, problems = asyncio.run(measure(page, args.repeats))
    print(f"real lines: {len(lines)} ({sum(x['status'] == 'ok' for x in lines)} ok); page of {args.takes} takes")
    print(f"page: {size / 1e6:.2f} MB, {(size - empty) / args.takes / 1000:.1f} KB per take, written in {build_s:.2f} s ({build_cpu_s:.2f} s CPU)")
    print(
        f"ready (first screen drawn, idle): median {statistics.median(ready):.0f} ms, "
        f"min {min(ready):.0f}, max {max(ready):.0f} over {len(ready)} loads"
    )
    print(f"scroll to the end, last take drawn: median {statistics.median(scroll):.0f} ms, max {max(scroll):.0f}")
    print(f"script errors: {len(problems)}" + (f" ({problems[0]})" if problems else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
