"""The measures a report page shows for each take, the limits they are held to, and which fail."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..measures.spectrum import HUM_MIN_S

FAIL = "fail"  # the service refuses it, or it is past one of our refusal thresholds
WARN = "warn"  # past one of our warning thresholds

Limits = Mapping[str, Any]


def _num(v: Any) -> float | None:
    """A finite number, or None (a report may hold null, text, or NaN where nothing was measured)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or abs(v) == float("inf"):
        return None
    return float(v)


def _fmt(v: float, digits: int) -> str:
    return f"{v:.{digits}f}".replace("-", "\u2212")  # a typographic minus reads better in a table


@dataclass(frozen=True)
class Measure:
    """One row of a take's measures table.

    ``key`` names the value in a report line's ``metrics`` (the produced clip in a `run` report,
    the file itself in a `check` report); ``input_key`` the same measure on the input of a run.
    ``content`` rows are judged on the input when a run produced no clip (the run would have
    reformatted the others: length, size). ``clip_only`` rows hold our clips to our thresholds
    and are not judged on a file checked as it is.
    """

    key: str
    label: str
    unit: str
    digits: int
    scale: float = 1.0
    input_key: str | None = None
    content: bool = True
    clip_only: bool = False

    def text(self, value: Any, metrics: Mapping[str, Any]) -> str | None:
        if self.key == "container":
            return _format_text(metrics)
        v = _num(value)
        if v is None:
            return None
        if self.key == "hum_db":
            hz = _num(metrics.get("hum_hz"))
            return "none found" if hz is None else f"{_fmt(v, 0)} dB"
        unit = f" {self.unit}" if self.unit else ""
        return _fmt(v * self.scale, self.digits) + unit


def _format_text(metrics: Mapping[str, Any]) -> str | None:
    """"WAV 16-bit", "MP3", "MP4 aac": the container, with the bit depth of PCM or a codec of its own."""
    container, codec, depth = metrics.get("container"), metrics.get("codec"), metrics.get("bit_depth")
    if not isinstance(container, str):
        return None
    name = container.upper()
    if isinstance(codec, str) and codec.startswith("pcm_"):
        return f"{name} {depth}-bit" if depth else name
    return name if not codec or codec == container else f"{name} {codec}"


MEASURES: tuple[Measure, ...] = (
    Measure("container", "Format", "", 0, content=False),
    Measure("duration_s", "Duration", "s", 1, input_key="input_duration_s", content=False),
    Measure("speech_s", "Speech", "s", 1, input_key="input_speech_s"),
    Measure("longest_speech_s", "Longest run", "s", 1, input_key="input_longest_speech_s"),
    Measure("longest_pause_s", "Longest pause", "s", 1, input_key="input_longest_pause_s", content=False, clip_only=True),
    Measure("loudness_lufs", "Loudness", "LUFS", 1),
    Measure("true_peak_dbtp", "True peak", "dBTP", 1, content=False, clip_only=True),
    Measure("snr_db", "SNR", "dB", 0),
    Measure("hum_db", "Mains hum", "", 0),
    Measure("bandwidth_hz", "Bandwidth", "kHz", 1, scale=1e-3),
    Measure("voice_distance", "Second voice", "", 2),
    Measure("loudness_spread_lu", "Loudness spread", "LU", 1),
    Measure("music_share", "Music in pauses", "%", 0, scale=100.0),
    Measure("clipped_ratio", "Clipped samples", "%", 3, scale=100.0),
    Measure("sample_rate", "Sample rate", "kHz", 1, scale=1e-3),
    Measure("size_bytes", "File size", "MB", 2, scale=1e-6, content=False),
)


def limits_from_config(config: Any) -> dict[str, Any]:
    """The service's limits and the thresholds of ``config`` (a loaded pipeline.yaml) as one flat
    mapping: `validate` and `quality` of the `check` chain, `window` and `loudness` of the `run` chain.
    A stage missing from the config leaves its keys out (its rows are then shown without a limit)."""
    from ..limits import MAX_FILE_BYTES, MIN_SAMPLE_RATE_HZ

    out: dict[str, Any] = {"max_size_bytes": MAX_FILE_BYTES, "min_sample_rate_hz": MIN_SAMPLE_RATE_HZ}
    wanted = {
        "validate": ("max_duration_s", "min_speech_s", "min_run_s"),
        "quality": (
            "min_snr_db",
            "refuse_snr_db",
            "max_clipped_ratio",
            "max_loudness_spread_lu",
            "refuse_loudness_spread_lu",
            "min_hum_prominence_db",
            "max_hum_db",
            "min_bandwidth_hz",
            "max_music_share",
            "max_voice_distance",
        ),
        "loudness": ("target_lufs", "ceiling_dbtp"),
    }
    for chain in (config.check, config.run):
        for stage in chain:
            for key in wanted.get(stage.name, ()):
                out.setdefault(key, getattr(stage, key))
            if stage.name == "window":
                out.setdefault("clip_min_s", stage.min_s)
                out.setdefault("clip_max_s", stage.max_s)
                out.setdefault("max_pause_s", stage.max_pause_s)
    return out


Judge = Callable[[float, Mapping[str, Any], Limits], "str | None"]


def _over(key: str, level: str) -> Judge:
    return lambda v, m, lim: level if key in lim and v > lim[key] else None


def _at_most(key: str) -> Judge:  # the service needs MORE than the limit
    return lambda v, m, lim: FAIL if key in lim and v <= lim[key] else None


def _snr(v: float, m: Mapping[str, Any], lim: Limits) -> str | None:
    if "refuse_snr_db" in lim and v < lim["refuse_snr_db"]:
        return FAIL
    return WARN if "min_snr_db" in lim and v < lim["min_snr_db"] else None


def _spread(v: float, m: Mapping[str, Any], lim: Limits) -> str | None:
    if "refuse_loudness_spread_lu" in lim and v > lim["refuse_loudness_spread_lu"]:
        return FAIL
    return WARN if "max_loudness_spread_lu" in lim and v > lim["max_loudness_spread_lu"] else None


def _hum(v: float, m: Mapping[str, Any], lim: Limits) -> str | None:
    prominence = _num(m.get("hum_prominence_db"))
    duration = _num(m.get("duration_s"))
    if m.get("hum_hz") is None or prominence is None or "max_hum_db" not in lim:
        return None
    if duration is not None and duration < HUM_MIN_S:  # the stage does not judge hum this short
        return None
    return WARN if prominence >= lim.get("min_hum_prominence_db", 0.0) and v > lim["max_hum_db"] else None


def _bandwidth(v: float, m: Mapping[str, Any], lim: Limits) -> str | None:
    rate = _num(m.get("sample_rate"))
    narrow = "min_bandwidth_hz" in lim and v < lim["min_bandwidth_hz"]
    return WARN if narrow and (rate is None or v < 0.4 * rate) else None


def _music(v: float, m: Mapping[str, Any], lim: Limits) -> str | None:
    if "max_music_share" not in lim or v <= lim["max_music_share"]:
        return None
    snr = _num(m.get("snr_db"))
    return FAIL if snr is not None and "min_snr_db" in lim and snr < lim["min_snr_db"] else WARN


def _peak(v: float, m: Mapping[str, Any], lim: Limits) -> str | None:
    return WARN if "ceiling_dbtp" in lim and v > lim["ceiling_dbtp"] + 0.05 else None


def _rate(v: float, m: Mapping[str, Any], lim: Limits) -> str | None:
    return FAIL if "min_sample_rate_hz" in lim and v < lim["min_sample_rate_hz"] else None


JUDGES: dict[str, Judge] = {
    "duration_s": _over("max_duration_s", FAIL),
    "speech_s": _at_most("min_speech_s"),
    "longest_speech_s": _at_most("min_run_s"),
    "longest_pause_s": _over("max_pause_s", WARN),
    "true_peak_dbtp": _peak,
    "snr_db": _snr,
    "hum_db": _hum,
    "bandwidth_hz": _bandwidth,
    "voice_distance": _over("max_voice_distance", WARN),
    "loudness_spread_lu": _spread,
    "music_share": _music,
    "clipped_ratio": _over("max_clipped_ratio", WARN),
    "sample_rate": _rate,
    "size_bytes": _over("max_size_bytes", FAIL),
}


@dataclass(frozen=True)
class _Shown:
    """How a measure's limit reads in the table: shown when ``option`` is in the limits (always,
    without one); ``text`` formats it (``n(option, digits, scale)``; ``has(option)``); ``whose``
    is "service" (its rule) or "ours" (a threshold in the config)."""

    option: str | None
    whose: str
    text: Callable[[Callable[..., str], Callable[[str], bool]], str]


LIMIT_TEXTS: dict[str, _Shown] = {
    "container": _Shown(None, "service", lambda n, has: "WAV 16-bit, MP3 or AAC"),
    "duration_s": _Shown("max_duration_s", "service", lambda n, has: f"\u2264 {n('max_duration_s')} s" + (
        f"; clips {n('clip_min_s')}\u2013{n('clip_max_s')} s" if has("clip_min_s") and has("clip_max_s") else "")),
    "speech_s": _Shown("min_speech_s", "service", lambda n, has: f"more than {n('min_speech_s')} s"),
    "longest_speech_s": _Shown("min_run_s", "service", lambda n, has: f"one run over {n('min_run_s')} s"),
    "longest_pause_s": _Shown("max_pause_s", "ours", lambda n, has: f"\u2264 {n('max_pause_s', 1)} s in a clip"),
    "loudness_lufs": _Shown("target_lufs", "ours", lambda n, has: f"target {n('target_lufs')} LUFS"),
    "true_peak_dbtp": _Shown("ceiling_dbtp", "ours", lambda n, has: f"\u2264 {n('ceiling_dbtp', 1)} dBTP"),
    "snr_db": _Shown("min_snr_db", "ours", lambda n, has: f"\u2265 {n('min_snr_db')} dB" + (
        f"; refused under {n('refuse_snr_db')}" if has("refuse_snr_db") else "")),
    "hum_db": _Shown("max_hum_db", "ours", lambda n, has: f"\u2264 {n('max_hum_db')} dB"),
    "bandwidth_hz": _Shown("min_bandwidth_hz", "ours", lambda n, has: f"\u2265 {n('min_bandwidth_hz', 1, 1e-3)} kHz"),
    "voice_distance": _Shown("max_voice_distance", "ours", lambda n, has: f"\u2264 {n('max_voice_distance', 2)}"),
    "loudness_spread_lu": _Shown("max_loudness_spread_lu", "ours", lambda n, has: f"\u2264 {n('max_loudness_spread_lu')} LU" + (
        f"; refused over {n('refuse_loudness_spread_lu')}" if has("refuse_loudness_spread_lu") else "")),
    "music_share": _Shown("max_music_share", "ours", lambda n, has: f"\u2264 {n('max_music_share', 0, 100.0)} %"),
    "clipped_ratio": _Shown("max_clipped_ratio", "ours", lambda n, has: f"\u2264 {n('max_clipped_ratio', 3, 100.0)} %"),
    "sample_rate": _Shown("min_sample_rate_hz", "service", lambda n, has: f"\u2265 {n('min_sample_rate_hz', 0, 1e-3)} kHz"),
    "size_bytes": _Shown("max_size_bytes", "service", lambda n, has: f"\u2264 {n('max_size_bytes', 0, 1e-6)} MB"),
}


def _limit(key: str, lim: Limits) -> tuple[str, str] | None:
    """``(text, whose)`` for a row, or None when the measure has no limit in ``lim``."""
    shown = LIMIT_TEXTS.get(key)
    if shown is None or (shown.option is not None and shown.option not in lim):
        return None

    def n(k: str, digits: int = 0, scale: float = 1.0) -> str:
        return _fmt(float(lim[k]) * scale, digits)

    return shown.text(n, lambda k: k in lim), shown.whose


def limit_rows(limits: Limits) -> list[list[Any]]:
    """The page's measure table header, once per page: ``[key, label, limit text, whose]`` per row."""
    rows = []
    for m in MEASURES:
        lim = _limit(m.key, limits)
        rows.append([m.key, m.label, lim[0] if lim else "", lim[1] if lim else ""])
    return rows


def _note(key: str, metrics: Mapping[str, Any]) -> str | None:
    """A few words under a value: the hum's frequency."""
    hz = _num(metrics.get("hum_hz"))
    return f"at {hz:.0f} Hz" if key == "hum_db" and hz is not None else None


def judge(metrics: Mapping[str, Any], limits: Limits, *, run: bool, produced: bool) -> list[list[str | None] | None]:
    """A take's measures, aligned with ``MEASURES``: ``[input text, clip text, level, note]`` or None
    when neither was measured. ``run``: a `run` report line (plain keys are the produced clip's,
    ``input_*`` the input's); otherwise a `check` line, whose plain keys are the file's own and go
    in the input column. ``produced``: the run wrote a clip. ``level`` is ``FAIL``, ``WARN`` or None.
    """
    rows: list[list[str | None] | None] = []
    for m in MEASURES:
        judge_fn = JUDGES.get(m.key)
        if run:
            plain = metrics.get(m.key)
            input_value = metrics.get(m.input_key) if m.input_key else None
            cells = (m.text(input_value, metrics) if m.input_key else None, m.text(plain, metrics))
            judged = _num(plain)
            if judged is None and not produced and m.content:
                judged = _num(input_value)
        else:
            value = metrics.get(m.key)
            cells = (m.text(value, metrics), None)
            judged = None if m.clip_only else _num(value)
        if cells == (None, None):
            rows.append(None)
            continue
        if m.key == "container":  # the one rule on text: validate lists it among the failures
            unsupported = "BadRequest.UnsupportedFileFormat" in (metrics.get("failures") or ())
            level = FAIL if unsupported else None
        else:
            level = judge_fn(judged, metrics, limits) if judge_fn is not None and judged is not None else None
        rows.append([cells[0], cells[1], level, _note(m.key, metrics)])
    return rows
