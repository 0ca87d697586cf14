"""render_page: report lines to one self-contained HTML page (inline CSS, JS and data, no network)."""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .envelope import FULL_SCALE, MAX_BINS
from .measures import judge, limit_rows

MAX_TEXT = 2000  # characters of a message or hint kept on the page
MAX_SEGMENTS = 1500  # segments per lane: finer than a pixel on any screen

CODE_WORDS = {
    "BadRequest.UnsupportedFileFormat": "format not accepted",
    "Audio.DecoderError": "damaged or not audio",
    "Audio.FileSizeExceed": "file over 10 MB",
    "Audio.AudioRateError": "sample rate too low",
    "Audio.AudioSilentError": "not enough speech",
    "Audio.AudioShortError": "no long enough stretch of speech",
    "InternalError": "too long, noisy or unsteady",
    "voiceprep.UnexpectedError": "voiceprep failed on it",
}
WARNING_WORDS = {
    "pause_shortened": "pauses shortened",
    "narrowband": "muffled (narrow band)",
    "low_snr": "background noise",
    "clipping": "clipping",
    "unsteady_loudness": "unsteady volume",
    "hum": "mains hum",
    "music_bed": "music under the speech",
    "multiple_speakers": "more than one voice",
    "dc_offset": "DC offset",
}


@functools.cache
def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _script_json(data: Any) -> str:
    """JSON safe inside a <script> element: no `</script>`, no `<!--`, whatever the strings hold."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if v == v and abs(v) != float("inf") else None


def _t(v: Any) -> float | None:
    x = _num(v)
    return None if x is None else round(x, 2)


def _pair(v: Any) -> list[float] | None:
    if isinstance(v, Mapping):
        v = [v.get("start_s"), v.get("end_s")]
    if not isinstance(v, Sequence) or isinstance(v, str) or len(v) != 2:
        return None
    a, b = _t(v[0]), _t(v[1])
    return [a, b] if a is not None and b is not None and b >= a else None


def _segments(v: Any, span_s: float | None) -> list[list[float]]:
    """Valid ``[a, b]`` pairs, sorted; gaps under a pixel's width merged when there are very many."""
    if not isinstance(v, Sequence) or isinstance(v, str):
        return []
    segs = sorted(p for p in (_pair(x) for x in v) if p is not None)
    if len(segs) > MAX_SEGMENTS and span_s:
        min_gap = span_s / MAX_SEGMENTS
        merged = [segs[0]]
        for a, b in segs[1:]:
            if a - merged[-1][1] < min_gap:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        segs = merged
    return segs


def _env(v: Any) -> str | None:
    """An envelope as base64 bytes (0-255), max-pooled down to ``MAX_BINS`` if longer."""
    if not isinstance(v, Sequence) or isinstance(v, str) or not v:
        return None
    try:
        raw = bytes(v)  # the usual case: integers 0-255 already
    except (TypeError, ValueError):
        raw = bytes(min(max(int(x), 0), FULL_SCALE) if _num(x) is not None else 0 for x in v)
    if len(raw) > MAX_BINS:
        n = len(raw)
        raw = bytes(max(raw[i * n // MAX_BINS : max((i + 1) * n // MAX_BINS, i * n // MAX_BINS + 1)]) for i in range(MAX_BINS))
    return base64.b64encode(raw).decode("ascii")


def compact_plot(line: Mapping[str, Any]) -> dict[str, Any] | None:
    """The page's plot data for a line: its ``plot``, or a bare time line built from ``segment``
    and ``metrics`` for a report written before plots existed (None when nothing is known)."""
    plot = line.get("plot")
    metrics = line.get("metrics") or {}
    if not isinstance(plot, Mapping):
        length = _t(metrics.get("input_duration_s")) or _t(metrics.get("duration_s"))
        if not length:
            return None
        segment = _pair(line.get("segment"))
        plot = {"input_s": length, "window": segment, "pieces": [segment] if segment else []}
    input_s = _t(plot.get("input_s"))
    if not input_s:
        return None
    output_s = _t(plot.get("output_s"))
    return {
        "is": input_s,
        "ie": _env(plot.get("input_env")),
        "os": output_s,
        "oe": _env(plot.get("output_env")) if output_s else None,
        "sp": _segments(plot.get("speech"), input_s),
        "ss": _pair(plot.get("speech_span")),
        "wn": _pair(plot.get("window")),
        "pc": _segments(plot.get("pieces"), input_s),
        "op": _segments(plot.get("output_speech"), output_s) if output_s else [],
    }


def normalise(line: Mapping[str, Any]) -> dict[str, Any]:
    """A report line in the runner's shape; a `check --json` line (``path``, ``ok``) is mapped to it."""
    out = dict(line)
    if "input" not in out and "path" in out:
        out["input"] = out["path"]
    if "status" not in out and "ok" in out:
        out["status"] = "ok" if out["ok"] else "rejected"
    return out


def _href(path: Any, link_base: Path, source_base: Path) -> str | None:
    """``path`` (as written in a report) as a URL relative to the page; None for remote paths."""
    if not isinstance(path, str) or not path or "://" in path:
        return None
    p = Path(path)
    full = p if p.is_absolute() else source_base / p
    rel = os.path.relpath(os.path.abspath(full), os.path.abspath(link_base))
    return quote(Path(rel).as_posix(), safe="/")


def _clip(text: Any) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= MAX_TEXT else s[: MAX_TEXT - 1] + "\u2026"


def _summary(line: Mapping[str, Any], plot: Mapping[str, Any] | None, run: bool) -> str:
    """The verdict of an accepted take in plain words."""
    if not run:
        return "The service would accept this file as it is."
    metrics = line.get("metrics") or {}
    length = _num(metrics.get("duration_s")) or (plot or {}).get("os")
    window = (plot or {}).get("wn") or _pair(line.get("segment"))
    text = "Accepted: a clip" + (f" of {length:.1f} s" if length else "")
    if window:
        text += f", cut from {window[0]:.1f}\u2013{window[1]:.1f} s of the input"
    gaps = max(len((plot or {}).get("pc") or []) - 1, 0)
    if gaps:
        text += f", {gaps} long pause{'s' if gaps > 1 else ''} shortened"
    return text + "."


def take_data(
    line: Mapping[str, Any],
    *,
    limits: Mapping[str, Any],
    link_base: Path,
    source_base: Path,
    mode: str | None = None,
) -> dict[str, Any]:
    """One take as the page's script reads it (short keys: the page holds thousands)."""
    line = normalise(line)
    raw_metrics = line.get("metrics")
    metrics: Mapping[str, Any] = raw_metrics if isinstance(raw_metrics, Mapping) else {}
    status = "ok" if line.get("status") == "ok" else "rejected"
    output = line.get("output") if isinstance(line.get("output"), str) else None
    plot = compact_plot(line)
    if mode is not None:
        run = mode == "run"
    else:
        run = bool(
            output
            or line.get("segment")
            or any(k in metrics for k in ("input_duration_s", "input_speech_s"))
            or (plot and (plot["os"] or plot["wn"]))
        )
    path = str(line.get("input", ""))
    name = path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or path
    folder = path[: len(path) - len(name)].rstrip("/\\")
    warnings = [
        [_clip(w.get("code")), _clip(w.get("message")), _clip(w.get("hint"))]
        for w in (line.get("warnings") or [])
        if isinstance(w, Mapping)
    ]
    code = line.get("code") if status == "rejected" else None
    return {
        "i": path,
        "n": name,
        "f": folder,
        "s": status,
        "k": bool(line.get("skipped")),
        "c": str(code) if code else ("?" if status == "rejected" else None),
        "cw": CODE_WORDS.get(str(code), "") if code else "",
        "m": _clip(line.get("message")) if status == "rejected" else _summary(line, plot, run),
        "h": _clip(line.get("hint")) if status == "rejected" else "",
        "g": line.get("stage") if status == "rejected" else None,
        "w": warnings,
        "run": run,
        "a": _href(path, link_base, source_base),
        "b": _href(output, link_base, source_base) if status == "ok" else None,
        "p": plot,
        "r": judge(metrics, limits, run=run, produced=status == "ok"),
        "x": distribution_values(metrics, run),
    }


def distribution_values(metrics: Mapping[str, Any], run: bool) -> list[float | None]:
    """A take's SNR, its input's loudness and the speech in its input: the page's histograms and
    sort keys. A `run` line holds the clip's loudness and the gain that made it; a `check` line
    measures the file itself."""
    snr = _t(metrics.get("snr_db"))
    if not run:
        return [snr, _t(metrics.get("loudness_lufs")), _t(metrics.get("speech_s"))]
    lufs, gain = _num(metrics.get("loudness_lufs")), _num(metrics.get("gain_db"))
    before_gain = _t(lufs - gain) if lufs is not None and gain is not None else None
    return [snr, before_gain, _t(metrics.get("input_speech_s"))]


STATIC_KEYS = ("f", "cw", "m", "h", "g", "idx")  # written into the page's HTML, not repeated in its data


def take_html(t: Mapping[str, Any]) -> str:
    """A take's element as plain HTML (readable without script): status, name, code, verdict, hint.
    The page's script fills its body (plot, players, measures, warnings) when it nears the screen."""
    e = html.escape
    rejected = t["s"] != "ok"
    head = [f'<span class="badge">{"Refused" if rejected else "Accepted"}</span>', f'<h2 title="{e(t["i"])}">{e(t["n"])}</h2>']
    if t["f"]:
        head.append(f'<span class="folder">{e(t["f"])}</span>')
    if t["c"]:
        head.append(f'<code class="code">{e(t["c"])}</code>')
    if t["cw"]:
        head.append(f'<span class="code-words">{e(t["cw"])}</span>')
    if t["g"]:
        head.append(f'<span class="stage">at the {e(str(t["g"]))} stage</span>')
    for code in dict.fromkeys(w[0] for w in t["w"]):
        head.append(f'<span class="pill">{e(WARNING_WORDS.get(code, code))}</span>')
    if t["k"]:
        head.append('<span class="pill skip">unchanged since an earlier run</span>')
    body = f'<p class="verdict">{e(t["m"])}</p>' + (f'<p class="hint">{e(t["h"])}</p>' if t["h"] else "")
    return (
        f'<article class="take {"rejected" if rejected else "ok"}" data-input="{e(t["i"])}" data-status="{t["s"]}" '
        f'data-index="{t["idx"]}"><header class="take-head">{"".join(head)}</header>{body}'
        '<div class="take-body"></div></article>'
    )


def page_data(
    lines: Iterable[Mapping[str, Any]],
    *,
    limits: Mapping[str, Any],
    link_base: Path,
    source_base: Path | None = None,
    mode: str | None = None,
) -> dict[str, Any]:
    """Everything the page's script needs, as one JSON-ready object (``takes[i]["html"]`` is
    the take's static element, taken out before the data is embedded). One take per input, in
    the order inputs first appear; a later line for the same input (a rerun appended to the
    report) replaces the earlier one. Each line is reduced as it is read: ``lines`` may stream."""
    if mode not in (None, "run", "check"):
        raise ValueError(f"mode must be 'run', 'check' or None, not {mode!r}")
    base = source_base if source_base is not None else Path.cwd()
    by_input: dict[str, dict[str, Any]] = {}
    run_of: dict[str, str] = {}  # the run each shown verdict comes from
    for raw in lines:
        line = normalise(raw)
        t = take_data(line, limits=limits, link_base=link_base, source_base=base, mode=mode)
        by_input[t["i"]] = t
        run_of.pop(t["i"], None)
        if line.get("run_id"):
            run_of[t["i"]] = str(line["run_id"])
    takes = list(by_input.values())
    for idx, t in enumerate(takes):
        t["idx"] = idx
        t["html"] = take_html(t)
        for key in STATIC_KEYS:
            del t[key]
    return {
        "measures": limit_rows(limits),
        "limits": {k: v for k, v in limits.items() if _num(v) is not None},
        "codes": CODE_WORDS,
        "warnings": WARNING_WORDS,
        "runs": sorted(set(run_of.values())),
        "takes": takes,
    }


def render_page(
    lines: Iterable[Mapping[str, Any]],
    *,
    limits: Mapping[str, Any],
    title: str,
    link_base: Path,
    source_base: Path | None = None,
    mode: str | None = None,
) -> str:
    """One self-contained HTML page for report ``lines`` (each a JSON Lines object of a report).

    ``limits``: the service's limits and the config's thresholds (``limits_from_config``).
    ``link_base``: the folder the page will be written to; audio players point at the inputs
    and outputs by paths relative to it. ``source_base``: the folder relative paths in the lines
    are relative to (default: the current one). ``mode``: "run" or "check" for every line, or
    None to tell from each line. A later line for the same input replaces an earlier one.
    Nothing on the page is fetched from the network: a Content-Security-Policy allows only the
    page's own script and style (by hash) and local media.
    """
    data = page_data(lines, limits=limits, link_base=link_base, source_base=source_base, mode=mode)
    articles = "".join(t.pop("html") for t in data["takes"])
    style, guard, script = _asset("page.css"), _asset("guard.js"), _asset("page.js")
    csp = (
        "default-src 'none'; "
        f"script-src {_csp_hash(guard)} {_csp_hash(script)}; "
        f"style-src {_csp_hash(style)}; "
        "img-src 'none'; media-src 'self' file:; base-uri 'none'; form-action 'none'"
    )
    parts = {
        "CSP": html.escape(csp, quote=True),
        "TITLE": html.escape(title),
        "STYLE": style,
        "GUARD": guard,
        "SCRIPT": script,
        "TAKES": articles,
        "DATA": _script_json(data),
    }
    # one pass: text put in by one placeholder is never read as another
    return re.sub(r"@@([A-Z]+)@@", lambda m: parts[m.group(1)], _asset("page.html"))
