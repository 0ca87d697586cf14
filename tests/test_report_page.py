"""The HTML report page from real takes: one element per input, limits judged, small, local, atomic."""

from __future__ import annotations

import json
import os
import re
import stat
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import yaml

from pipeline import config as config_mod
from pipeline.cli import main
from pipeline.report_page import limits_from_config, render_page, write_page
from pipeline.report_page.envelope import EnvelopeBuilder, envelope
from pipeline.report_page.measures import FAIL, LIMIT_TEXTS, MEASURES, WARN, limit_rows
from pipeline.report_page.page import page_data

PER_TAKE_LIMIT = 80_000


@pytest.fixture
def takes(report_takes) -> dict:
    return report_takes


def by_name(lines: list[dict], name: str) -> dict:
    return next(x for x in lines if Path(x["input"]).name == name)


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text of <script> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._in_script: dict[str, str | None] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = dict(attrs)
            self.scripts.append((self._in_script, ""))

    def handle_data(self, data):
        if self._in_script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = None


def parse(page: str) -> Elements:
    p = Elements()
    p.feed(page)
    return p


def embedded(page: str) -> dict:
    doc = parse(page)
    blocks = [text for attrs, text in doc.scripts if attrs.get("type") == "application/json"]
    assert len(blocks) == 1
    return json.loads(blocks[0])


def render(lines, cfg, base: Path, **kw) -> str:
    return render_page(lines, limits=limits_from_config(cfg), title="takes", link_base=base, **kw)


def test_one_element_per_input_with_its_status(takes):
    lines = takes["lines"]
    assert {x["status"] for x in lines} == {"ok", "rejected"}
    page = render(lines, takes["config"], takes["root"])
    articles = [a for tag, a in parse(page).tags if tag == "article"]
    assert [(a["data-input"], a["data-status"]) for a in articles] == [(x["input"], x["status"]) for x in lines]
    data = embedded(page)
    assert [t["i"] for t in data["takes"]] == [x["input"] for x in lines]
    # each take carries its plot: the envelope as it came from the audio, the window and its pieces
    for t, line in zip(data["takes"], lines):
        import base64

        assert list(base64.b64decode(t["p"]["ie"])) == line["plot"]["input_env"]
        assert t["p"]["wn"] == line["plot"]["window"]
    spaced = next(t for t in data["takes"] if t["i"].endswith("spaced_reader.wav"))
    assert len(spaced["p"]["pc"]) >= 2 and spaced["p"]["os"] < spaced["p"]["is"]


def test_nothing_on_the_page_comes_from_the_network(takes):
    page = render(takes["lines"], takes["config"], takes["root"])
    doc = parse(page)
    assert not [a for tag, a in doc.tags for k in ("src", "href", "poster", "data", "action") if a.get(k)]
    assert not [tag for tag, a in doc.tags if tag in ("link", "iframe", "img", "object", "embed", "base")]
    assert "@import" not in page and not re.search(r"url\(\s*['\"]?(https?:)?//", page)
    # the players' sources (set by the script) are paths relative to the page, never URLs
    links = [u for t in embedded(page)["takes"] for u in (t["a"], t["b"]) if u]
    assert len(links) == len(takes["lines"]) + sum(x["status"] == "ok" for x in takes["lines"])
    assert not [u for u in links if re.match(r"^([a-z][a-z0-9+.-]*:|//)", u, re.I)]
    csp = next(a["content"] for tag, a in doc.tags if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert csp.startswith("default-src 'none';") and "unsafe-inline" not in csp


def test_audio_links_lead_to_the_files_from_where_the_page_is(takes, tmp_path):
    lines = takes["lines"]
    where = tmp_path / "pages" / "deep"
    where.mkdir(parents=True)
    data = embedded(render(lines, takes["config"], where))
    for t, line in zip(data["takes"], lines):
        assert (where / unquote(t["a"])).resolve() == Path(line["input"]).resolve()
        if line["status"] == "ok":
            assert (where / unquote(t["b"])).resolve() == Path(line["output"]).resolve()
            assert (where / unquote(t["b"])).is_file()
        else:
            assert t["b"] is None
    # a path with spaces and a `#` is quoted, a remote one is not linked at all
    odd = dict(lines[0], input="my takes/#1 take.wav", output="s3://bucket/out.wav")
    t = embedded(render([odd], takes["config"], tmp_path, source_base=tmp_path))["takes"][0]
    assert t["a"] == "my%20takes/%231%20take.wav" and t["b"] is None


def test_at_most_80_kb_per_take_even_for_an_hour_long_input(takes):
    cfg = takes["config"]
    lines = takes["lines"] + takes["check"]
    empty = len(render([], cfg, takes["root"]).encode())
    full = len(render(lines, cfg, takes["root"]).encode())
    assert (full - empty) / len(lines) < PER_TAKE_LIMIT / 10, "real takes use a few KB each"
    # an hour of talk: 3,000 speech segments and an envelope sent at 4 times the bins asked for
    rng = np.random.default_rng(0)
    starts = np.sort(rng.uniform(0, 3600, 3000))
    hour = dict(takes["lines"][0], input="long/hour.wav")
    hour["plot"] = dict(
        hour["plot"],
        input_s=3600.0,
        input_env=[int(v) for v in rng.integers(0, 256, 2400)],
        speech=[[float(a), float(a) + 0.8] for a in starts],
        speech_span=[1200.0, 1260.0],
    )
    one = len(render([hour], cfg, takes["root"]).encode()) - empty
    assert one < PER_TAKE_LIMIT
    p = embedded(render([hour], cfg, takes["root"]))["takes"][0]["p"]
    import base64

    env = base64.b64decode(p["ie"])
    assert len(env) == 600 and max(env) == max(hour["plot"]["input_env"])
    assert len(p["sp"]) <= 1500 and p["ss"] == [1200.0, 1260.0]


def test_text_from_the_report_cannot_break_out_of_the_page(takes):
    evil = '</script><script>alert(1)</script><!-- "quoted" & \'single\' \u2028 テイク.wav'
    refused = next(x for x in takes["lines"] if x["status"] == "rejected")
    line = dict(refused, input=evil, message="<b>not bold</b>", hint="</p>")
    page = render([line], takes["config"], takes["root"])
    doc = parse(page)
    assert len(doc.scripts) == 3, "the guard, the data and the page's script: no other"
    assert [a["data-input"] for tag, a in doc.tags if tag == "article"] == [evil]
    assert embedded(page)["takes"][0]["i"] == evil
    assert "<b>not bold</b>" not in page and "&lt;b&gt;not bold&lt;/b&gt;" in page


def test_measures_are_judged_against_the_limits(takes, tmp_path):
    keys = [m.key for m in MEASURES]
    cfg = takes["config"]
    data = embedded(render(takes["lines"], cfg, takes["root"]))
    rows = {t["i"].rsplit("/", 1)[-1]: t["r"] for t in data["takes"]}
    short = rows["speech_arctic_awb_16k.wav"]  # refused at the window: its input is what failed
    assert short[keys.index("speech_s")][0] and short[keys.index("speech_s")][2] == FAIL
    assert short[keys.index("longest_speech_s")][2] == FAIL
    good = rows["speech_librivox_16k.wav"]
    assert not [r for r in good if r and r[2] == FAIL]
    assert good[keys.index("duration_s")][1].endswith(" s"), "the clip's column is filled"
    assert good[keys.index("container")][:3] == [None, "WAV 16-bit", None]
    # the limits are the config's: raise the SNR thresholds and the same clip fails, then warns
    librivox = by_name(takes["lines"], "speech_librivox_16k.wav")
    snr = librivox["metrics"]["snr_db"]
    for refuse, warn, level in ((snr + 5, snr + 10, FAIL), (snr - 5, snr + 5, WARN), (snr - 10, snr - 5, None)):
        spec = yaml.safe_load(config_mod.default_config_path().read_text())
        spec["check"][1]["quality"].update(refuse_snr_db=refuse, min_snr_db=warn)
        strict = config_mod.parse(spec)
        limits = limits_from_config(strict)
        assert (limits["refuse_snr_db"], limits["min_snr_db"]) == (refuse, warn)
        got = embedded(render([librivox], strict, takes["root"]))
        assert got["takes"][0]["r"][keys.index("snr_db")][2] == level
        assert f"\u2265 {warn:.0f} dB" in got["measures"][keys.index("snr_db")][2].replace("\u2212", "-")


def test_check_lines_show_the_file_itself(takes):
    data = embedded(render(takes["check"], takes["config"], takes["root"]))
    assert [t["s"] for t in data["takes"]] == [x["status"] for x in takes["check"]]
    for t in data["takes"]:
        assert not t["run"] and t["p"]["os"] is None and t["b"] is None
        assert all(r is None or r[1] is None for r in t["r"]), "no clip column"
    keys = [m.key for m in MEASURES]
    rate = next(t for t in data["takes"] if t["i"].endswith("hold_music_8k.flac"))
    assert rate["c"] == "BadRequest.UnsupportedFileFormat"  # FLAC: the first rule it breaks
    assert rate["r"][keys.index("container")][:3] == ["FLAC", None, FAIL]
    assert rate["r"][keys.index("sample_rate")][2] == FAIL
    wav = next(t for t in data["takes"] if t["i"].endswith("speech_librivox_16k.wav"))
    assert wav["r"][keys.index("container")][2] is None
    # a pause over the window's limit is ours to shorten, not a fault of a file checked as it is
    assert all(t["r"][keys.index("longest_pause_s")][2] is None for t in data["takes"])


def test_mode_check_shows_run_lines_as_files(takes):
    data = embedded(render(takes["lines"], takes["config"], takes["root"], mode="check"))
    assert not any(t["run"] for t in data["takes"])
    with pytest.raises(ValueError, match="mode"):
        render(takes["lines"], takes["config"], takes["root"], mode="clip")


def test_a_report_without_plots_still_gets_a_time_line(takes):
    bare = [{k: v for k, v in x.items() if k != "plot"} for x in takes["lines"]]
    data = embedded(render(bare, takes["config"], takes["root"]))
    ok = next(t for t, x in zip(data["takes"], bare) if x["status"] == "ok")
    assert ok["p"]["ie"] is None and ok["p"]["wn"] and ok["p"]["is"] > ok["p"]["wn"][1] - ok["p"]["wn"][0]


def test_later_lines_replace_earlier_ones_and_skipped_takes_are_marked(takes):
    first = takes["lines"]
    again = [dict(x, run_id="r2", skipped=True) for x in first[:2]]
    data = page_data(first + again, limits={}, link_base=takes["root"])
    shown = again + first[2:]
    assert len(data["takes"]) == len(first)
    assert data["runs"] == sorted({str(x["run_id"]) for x in shown if x.get("run_id")}) and "r2" in data["runs"]
    assert [t["k"] for t in data["takes"]].count(True) == 2


def test_envelope_is_the_peak_per_bin_and_the_same_from_blocks(librivox):
    x = librivox[0][0]
    env = envelope(x)
    assert len(env) == 600 and max(env) == round(float(np.max(np.abs(x))) * 255)
    edges = np.linspace(0, len(x), 601).astype(int)
    loud = int(np.argmax(np.abs(x)))
    assert env[int(np.searchsorted(edges, loud, side="right")) - 1] == max(env)
    built = EnvelopeBuilder(len(x))
    for i in range(0, len(x), 12_345):
        built.add(x[i : i + 12_345])
    assert built.values() == env
    assert envelope(np.zeros(0, np.float32)) == [] and len(envelope(x[:100])) == 100


def test_envelope_of_several_channels_is_their_peak_and_bad_samples_do_not_spread(librivox):
    x = librivox[0][0]
    quiet = (x * 0.25).astype(np.float32)
    # the voice moves to the second channel halfway: each bin shows the louder of the two
    half = len(x) // 2
    stereo = np.stack([np.r_[x[:half], quiet[half:]], np.r_[quiet[:half], x[half:]]])
    assert envelope(stereo) == envelope(x)
    broken = x.copy()
    broken[10], broken[20] = np.nan, np.inf  # both in the first bin
    env, clean = envelope(broken), envelope(x)
    assert env[0] == 255 and env[1:] == clean[1:]
    broken[20] = 0.0
    assert envelope(broken)[0] == envelope(np.where(np.isnan(broken), 0.0, broken))[0]


def test_write_page_replaces_the_file_atomically(takes, tmp_path):
    target = tmp_path / "site" / "report.html"
    old = os.umask(0o022)
    try:
        size = write_page(target, takes["lines"], takes["config"], title="batch")
    finally:
        os.umask(old)
    assert size == target.stat().st_size and stat.S_IMODE(target.stat().st_mode) == 0o644
    before = target.read_bytes()
    with pytest.raises(AttributeError):
        write_page(target, takes["lines"], None)  # no config: fails before anything is written
    assert target.read_bytes() == before and sorted(p.name for p in target.parent.iterdir()) == ["report.html"]


def test_report_command_builds_the_page_from_a_report(takes, tmp_path, capsys, monkeypatch):
    root = takes["root"]
    report = tmp_path / "report.jsonl"
    # a rerun appended below the first one: one entry per input all the same
    text = "".join(json.dumps(x) + "\n" for x in takes["lines"])
    report.write_text(text + "\n" + text)
    monkeypatch.chdir(root.parent)
    out = tmp_path / "html" / "page.html"
    assert main(["report", str(report), "-o", str(out)]) == 0
    assert f"{len(takes['lines'])} takes" in capsys.readouterr().out
    page = out.read_text()
    articles = [a for tag, a in parse(page).tags if tag == "article"]
    assert [a["data-input"] for a in articles] == [x["input"] for x in takes["lines"]]
    for t in embedded(page)["takes"]:
        assert (out.parent / unquote(t["a"])).is_file()


def test_report_command_refuses_what_is_not_a_report(tmp_path, capsys):
    out = tmp_path / "page.html"
    assert main(["report", str(tmp_path / "missing.jsonl"), "-o", str(out)]) == 2
    assert "cannot read" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "a.wav", "status": "ok"}\n{"oops"\n')
    assert main(["report", str(bad), "-o", str(out)]) == 2
    assert f"{bad}:2: not a report line" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert main(["report", str(empty), "-o", str(out)]) == 2
    assert "holds no report lines" in capsys.readouterr().err
    assert not out.exists()
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("check: [nosuchstage]\n")
    assert main(["report", str(bad), "-o", str(out), "--config", str(cfg)]) == 2
    assert "config error" in capsys.readouterr().err


def test_run_and_check_carry_the_plot_the_page_draws(tmp_path: Path):
    """The data of each take's plot comes from the run itself (no decoding again): the input's
    waveform and speech, the window and its pieces inside the input, the clip's waveform and speech."""
    import soundfile as sf

    from pipeline.api import check
    from pipeline.cli import main

    src = tmp_path / "in"
    src.mkdir()
    reader = Path(__file__).resolve().parent.parent / "fixtures" / "speech_librivox_16k.wav"
    x, sr = sf.read(reader, dtype="float32")
    sf.write(src / "take.wav", x, sr, subtype="PCM_16")
    sf.write(src / "short.wav", x[: sr * 4], sr, subtype="PCM_16")
    rep = tmp_path / "r.jsonl"
    main(["run", str(src), "--out", str(tmp_path / "out"), "--report", str(rep), "--html", str(tmp_path / "p.html"), "-q"])
    lines = {Path(d["input"]).name: d for d in map(json.loads, rep.read_text().splitlines())}
    take, short = lines["take.wav"]["plot"], lines["short.wav"]["plot"]
    assert take["input_s"] == pytest.approx(len(x) / sr, abs=0.01) and 100 <= len(take["input_env"]) <= 600
    assert max(take["input_env"]) == pytest.approx(255 * float(np.max(np.abs(x))), abs=2)
    a, b = take["window"]
    assert 0 <= a < b <= take["input_s"] and take["pieces"][0][0] == pytest.approx(a, abs=0.01)
    assert any(s <= a + 0.5 and a < e for s, e in take["speech"])  # the window starts at speech
    assert take["output_s"] == pytest.approx(lines["take.wav"]["metrics"]["duration_s"], abs=0.01)
    assert sum(e - s for s, e in take["output_speech"]) == pytest.approx(lines["take.wav"]["metrics"]["speech_s"], abs=0.05)
    assert short["window"] is None and short["output_env"] is None
    assert 0 < sum(e - s for s, e in short["speech"]) < 4.5  # the refused take still shows its speech
    page = (tmp_path / "p.html").read_text()
    assert page.count("data-input=") == 2
    verdict = check(src / "take.wav", plot=True)
    assert verdict.plot is not None and verdict.plot["speech"] and verdict.plot["output_env"] is None


def test_the_limits_row_reads_the_configs_thresholds():
    limits = limits_from_config(config_mod.load())
    # every limit the table shows is one the config gives, and every measure has a row
    assert {t.option for t in LIMIT_TEXTS.values() if t.option is not None} <= set(limits)
    rows = {key: (text, whose) for key, _, text, whose in limit_rows(limits)}
    assert set(rows) == {m.key for m in MEASURES}
    assert rows["snr_db"] == (f"\u2265 {limits['min_snr_db']:.0f} dB; refused under {limits['refuse_snr_db']:.0f}", "ours")
    assert rows["sample_rate"] == ("\u2265 16 kHz", "service") and rows["size_bytes"] == ("\u2264 10 MB", "service")
    assert rows["duration_s"][0].endswith(f"clips {limits['clip_min_s']:.0f}\u2013{limits['clip_max_s']:.0f} s")
    # a threshold missing from the limits leaves its row without one; the optional parts go alone
    fewer = {k: v for k, v in limits.items() if k not in ("max_hum_db", "refuse_snr_db")}
    rows = {key: text for key, _, text, _ in limit_rows(fewer)}
    assert rows["hum_db"] == "" and rows["snr_db"] == f"\u2265 {limits['min_snr_db']:.0f} dB"
