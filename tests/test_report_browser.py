"""The report page in headless Chromium (DevTools protocol): no script error, every take drawn from
its data, nothing fetched from the network, filters, sorting and players that work."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from chromium import Browser, Page, executable

from pipeline.report_page import write_page

if executable() is None and os.environ.get("VOICEPREP_REQUIRE_BROWSER"):
    pytest.fail("VOICEPREP_REQUIRE_BROWSER is set but chromium is not installed", pytrace=False)
pytestmark = pytest.mark.skipif(executable() is None, reason="chromium is not installed (.ci/run installs it)")

READY = "document.documentElement.getAttribute('data-ready') === '1'"
ARTICLES = "[...document.querySelectorAll('#takes > article')]"
SCROLL_THROUGH = f"""(async () => {{
  for (const a of {ARTICLES}) {{
    a.scrollIntoView();
    await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  }}
  return true;
}})()"""
# What each take's canvas holds: pixels drawn at all, and pixels in the page's own colours for
# speech and for shortened pauses (read from its style sheet, so the test follows the palette).
PIXELS = f"""(() => {{
  const css = getComputedStyle(document.documentElement);
  const rgb = name => {{
    const h = css.getPropertyValue(name).trim().slice(1);
    return [0, 2, 4].map(i => parseInt(h.slice(i, i + 2), 16));
  }};
  const speech = rgb('--speech'), pause = rgb('--pause');
  const near = (d, i, c) => Math.abs(d[i] - c[0]) + Math.abs(d[i + 1] - c[1]) + Math.abs(d[i + 2] - c[2]) < 12;
  return {ARTICLES}.map(a => {{
    const c = a.querySelector('canvas.plot');
    if (!c) return {{input: a.dataset.input, status: a.dataset.status, canvas: false}};
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let ink = 0, sp = 0, pa = 0;
    for (let i = 0; i < d.length; i += 4) {{
      if (d[i + 3] > 0) ink++;
      if (d[i + 3] === 255 && near(d, i, speech)) sp++;
      if (d[i + 3] === 255 && near(d, i, pause)) pa++;
    }}
    return {{input: a.dataset.input, status: a.dataset.status, canvas: true, drawn: a.hasAttribute('data-drawn'),
             share: ink / (c.width * c.height), speech: sp, pause: pa}};
  }});
}})()"""


def browse(page_path: Path, scenario: Any, fetched: tuple[str, ...] = ()) -> Any:
    """Run ``scenario(page)`` on ``page_path`` once it is ready; fails on any script error, and on
    any request but the page, Chromium's own icons and the local files in ``fetched``."""

    async def go() -> Any:
        async with Browser() as browser:
            page = await browser.open(page_path)
            await page.wait_for(READY)
            result = await scenario(page)
            errors = json.loads(await page.evaluate("document.documentElement.getAttribute('data-errors')"))
            assert errors == [] and page.exceptions == [] and page.console_errors == []
            # the page itself, and Chromium's own icons for the audio controls: nothing else
            own = [page_path.resolve().as_uri(), *(Path(f).resolve().as_uri() for f in fetched)]
            assert sorted({u for u in page.requests if not u.startswith("data:")}) == sorted(own)
            return result

    return asyncio.run(go())


@pytest.fixture
def page_path(report_takes) -> Path:
    target = report_takes["root"] / "pages" / "report.html"
    write_page(target, report_takes["lines"] + report_takes["check"], report_takes["config"], title="takes")
    return target


async def visible(page: Page) -> list[dict[str, str]]:
    return await page.evaluate(f"{ARTICLES}.map(a => ({{input: a.dataset.input, status: a.dataset.status}}))")


def test_every_take_is_drawn_from_its_data_without_errors(report_takes, page_path):
    lines = report_takes["lines"] + report_takes["check"]

    async def scenario(page: Page) -> Any:
        await page.evaluate(SCROLL_THROUGH)
        await page.wait_for(f"{ARTICLES}.every(a => a.hasAttribute('data-drawn'))")
        charts = await page.evaluate("[...document.querySelectorAll('.chart')].map(c => c.querySelectorAll('rect').length)")
        return await page.evaluate(PIXELS), charts

    # the same input in `run` and `check` lines: the page keeps the later (check) line for it
    latest = {x["input"]: x for x in lines}
    shown, charts = browse(page_path, scenario)
    assert [(s["input"], s["status"]) for s in shown] == [(k, v["status"]) for k, v in latest.items()]
    assert len(charts) == 3 and all(n > 0 for n in charts)
    for s in shown:
        plot = latest[s["input"]]["plot"]
        assert s["canvas"] and s["drawn"] and s["share"] > 0.05, s
        assert (s["speech"] > 0) == bool(plot["speech"]), s
        assert (s["pause"] > 0) == (len(plot["pieces"]) > 1), s
    assert any(s["pause"] for s in shown) and any(not latest[s["input"]]["plot"]["speech"] for s in shown)


def test_filters_and_sorting(report_takes, page_path):
    lines = {x["input"]: x for x in report_takes["lines"] + report_takes["check"]}

    async def choose(page: Page, select: str, value: str) -> list[dict[str, str]]:
        await page.evaluate(
            f"(() => {{ const s = document.getElementById('{select}'); s.value = {json.dumps(value)};"
            " s.dispatchEvent(new Event('change')); })()"
        )
        return await visible(page)

    async def scenario(page: Page) -> dict[str, Any]:
        out = {"refused": await choose(page, "f-status", "rejected")}
        out["silent"] = await choose(page, "f-code", "Audio.AudioSilentError")
        await choose(page, "f-status", "all")
        await choose(page, "f-code", "all")
        out["shortened"] = await choose(page, "f-warning", "pause_shortened")
        await choose(page, "f-warning", "all")
        out["by_name"] = await choose(page, "f-sort", "name")
        out["refused_first"] = await choose(page, "f-sort", "refused")
        await page.evaluate("(() => { const f = document.getElementById('f-text'); f.value = 'ARCTIC';"
                            " f.dispatchEvent(new Event('input')); })()")
        await page.wait_for(f"{ARTICLES}.length === 1")
        out["found"] = await visible(page)
        await page.evaluate("document.querySelector('.chip.ok').click()")  # the `Accepted` chip
        out["chip"] = await page.evaluate("document.getElementById('f-status').value")
        return out

    got = browse(page_path, scenario)
    refused = [k for k, v in lines.items() if v["status"] == "rejected"]
    assert [x["input"] for x in got["refused"]] == refused and all(x["status"] == "rejected" for x in got["refused"])
    assert [x["input"] for x in got["silent"]] == [k for k in refused if lines[k]["code"] == "Audio.AudioSilentError"]
    assert [Path(x["input"]).name for x in got["shortened"]] == ["spaced_reader.wav"]
    names = [Path(x["input"]).name for x in got["by_name"]]
    assert names == sorted(names) and len(names) == len(lines)
    statuses = [x["status"] for x in got["refused_first"]]
    assert statuses == sorted(statuses, key=lambda s: s != "rejected")
    assert [Path(x["input"]).name for x in got["found"]] == ["speech_arctic_awb_16k.wav"]
    assert got["chip"] == "ok"


def test_players_play_the_files_and_a_click_seeks(report_takes, page_path):
    line = next(x for x in report_takes["lines"] if x["input"].endswith("meeting_ami_trn05_16k.flac"))
    find = f"{ARTICLES}.find(a => a.dataset.input === {json.dumps(line['input'])})"

    async def scenario(page: Page) -> Any:
        await page.evaluate(f"{find}.scrollIntoView()")
        await page.wait_for(f"{find}.hasAttribute('data-drawn')")
        durations = await page.evaluate(f"""Promise.all([...{find}.querySelectorAll('audio')].map(au => new Promise(ok => {{
            au.addEventListener('loadedmetadata', () => ok(au.duration));
            au.addEventListener('error', () => ok('error ' + au.src));
            au.preload = 'metadata'; au.load();
        }})))""")
        box = await page.evaluate(f"(() => {{ const r = {find}.querySelector('canvas').getBoundingClientRect();"
                                  " return [r.left, r.top, r.width]; })()")
        # where the click put the input's player, read as it is told to play (once playing, its
        # position would depend on how long the machine takes to ask)
        await page.evaluate(f"""(() => {{ const au = {find}.querySelector('audio'); window.seekedTo = null;
            au.play = function () {{ window.seekedTo = this.currentTime; return HTMLMediaElement.prototype.play.call(this); }};
        }})()""")
        x, y = box[0] + 1 + 0.5 * (box[2] - 2), box[1] + 30  # the middle of the input's lane
        for kind in ("mousePressed", "mouseReleased"):
            await page.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})
        at = await page.wait_for("window.seekedTo !== null && [window.seekedTo]")
        return durations, at[0], box[2]

    (input_s, clip_s), at, width = browse(page_path, scenario, fetched=(line["input"], line["output"]))
    assert abs(input_s - line["plot"]["input_s"]) < 0.05 and abs(clip_s - line["plot"]["output_s"]) < 0.05
    per_px_s = line["plot"]["input_s"] / (width - 2)
    assert abs(at - 0.5 * line["plot"]["input_s"]) <= per_px_s  # where the click was, to a pixel


def test_a_long_batch_draws_only_what_is_near_the_screen(report_takes, tmp_path):
    lines = []
    for k in range(300):
        base = report_takes["lines"][k % len(report_takes["lines"])]
        lines.append(dict(base, input=f"{base['input']}.{k:03d}", output=base["output"]))
    target = report_takes["root"] / "pages" / "long.html"
    write_page(target, lines, report_takes["config"], title="300 takes")

    async def scenario(page: Page) -> Any:
        at_start = await page.evaluate(f"[{ARTICLES}.length, {ARTICLES}.filter(a => a.hasAttribute('data-drawn')).length]")
        await page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        await page.wait_for(f"{ARTICLES}.at(-1).hasAttribute('data-drawn')")
        drawn = await page.evaluate(f"{ARTICLES}.filter(a => a.hasAttribute('data-drawn')).length")
        return at_start, drawn

    (count, first), after = browse(target, scenario)
    assert count == 300 and 0 < first < 20 and first < after < 60
