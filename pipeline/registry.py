"""Stage registry: YAML names to stage classes (``stages/<name>.py``), with strict option checking."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import pkgutil
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args, get_origin

from .clip import FACTS
from .errors import ConfigError

T = TypeVar("T")
MARK = "__voiceprep_stage__"


def register(cls: type[T]) -> type[T]:
    """Class decorator: mark a stage class as buildable from YAML by its ``name``, after checking
    that it is a frozen dataclass declaring what it needs and provides."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs a class attribute `name`")
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"stage {name} must be a dataclass")
    for attr in ("needs", "provides"):
        facts = getattr(cls, attr, None)
        if not isinstance(facts, frozenset) or not facts <= set(FACTS):
            raise TypeError(f"stage {name}: `{attr}` must be a frozenset of {', '.join(FACTS)}")
    setattr(cls, MARK, name)
    init = cls.__init__

    @functools.wraps(init)
    def checked_init(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        for f in _option_fields(type(self)):  # built in code, not from YAML: the same ranges hold
            if not _in_range(getattr(self, f.name), f.metadata):
                raise ValueError(f"{f.name}: {getattr(self, f.name)!r} is out of range; valid: {_range(f.metadata)}")

    cls.__init__ = checked_init  # type: ignore[method-assign]
    return cls


def _stage_in(module: types.ModuleType, name: str) -> type[Any] | None:
    for value in vars(module).values():
        if isinstance(value, type) and value.__dict__.get(MARK) == name:
            return value
    return None


@functools.cache
def available() -> dict[str, type[Any]]:
    """Every stage of the `stages` package, by YAML name, sorted."""
    import stages

    found: dict[str, type[Any]] = {}
    for mod in pkgutil.iter_modules(stages.__path__):
        if not mod.name.startswith("_"):
            cls = _stage_in(importlib.import_module(f"stages.{mod.name}"), mod.name)
            if cls is not None:
                found[mod.name] = cls
    return dict(sorted(found.items()))


def get(name: str) -> type[Any]:
    """The stage class registered as ``name``. A stage lives in ``stages/<name>.py``, so only the
    modules of the stages a config names are imported; an unknown name lists the valid ones."""
    if name.isidentifier() and not name.startswith("_"):
        try:
            module = importlib.import_module(f"stages.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"stages.{name}":
                raise
        else:
            cls = _stage_in(module, name)
            if cls is not None:
                return cls
    raise ConfigError(f"unknown stage {name!r}; valid stages: {', '.join(available())}")


@dataclass(frozen=True)
class OptionDoc:
    name: str
    type: str
    default: Any
    help: str
    range: str = ""  # e.g. "10 to 60", "above 0", "" when any value of the type is valid


def _range(meta: Mapping[str, Any]) -> str:
    lo, hi, above = meta.get("min"), meta.get("max"), meta.get("above")
    if above is not None:
        return f"above {above:g}" + (f", at most {hi:g}" if hi is not None else "")
    if lo is not None and hi is not None:
        return f"{lo:g} to {hi:g}"
    if lo is not None:
        return f"at least {lo:g}"
    return f"at most {hi:g}" if hi is not None else ""


def _in_range(value: Any, meta: Mapping[str, Any]) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return True
    lo, hi, above = meta.get("min"), meta.get("max"), meta.get("above")
    return not ((lo is not None and value < lo) or (hi is not None and value > hi) or (above is not None and value <= above))


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _option_fields(cls: type[Any]) -> list[dataclasses.Field[Any]]:
    """The fields a YAML file may set: init fields that are not filled from a config section."""
    return [f for f in dataclasses.fields(cls) if f.init and "section" not in f.metadata]


def options(cls: type[Any]) -> list[OptionDoc]:
    """The options of a stage class: name, type, default and one-line help."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in _option_fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        out.append(OptionDoc(f.name, _type_name(hints[f.name]), default, f.metadata.get("help", ""), _range(f.metadata)))
    return out


def sections(cls: type[Any]) -> dict[str, str]:
    """The config sections a stage class reads, by field name."""
    return {f.name: f.metadata["section"] for f in dataclasses.fields(cls) if "section" in f.metadata}


def summary(cls: type[Any]) -> str:
    """First line of a stage's docstring."""
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(repr(c) for c in choices)}")
    if origin in (typing.Union, types.UnionType):
        for arm in get_args(tp):
            try:
                return _coerce(value, arm, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not {_type_name(tp)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):
                raise ConfigError(f"{where}: expected a finite number, got {str(value)[:20]}")
            return number
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported option type {_type_name(tp)}")


def build(name: str, opts: Mapping[str, Any] | None = None, *, context: Mapping[str, Any] | None = None) -> Any:
    """Build a stage by YAML name, rejecting unknown options and wrong types with the valid choices.

    ``context`` maps config section names (e.g. ``enroll``) to their parsed settings, for the
    fields a stage fills from a section; absent, those fields keep their defaults."""
    cls = get(name)
    opts = dict(opts or {})
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in _option_fields(cls)]
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        choices = ", ".join(valid) if valid else "(none)"
        raise ConfigError(f"stage {name!r} has no option {unknown[0]!r}; valid options: {choices}", path=(unknown[0],))
    fields = {f.name: f for f in _option_fields(cls)}
    kwargs = {}
    for k, v in opts.items():
        where = f"stage {name!r} option {k!r}"
        try:
            value = _coerce(v, hints[k], where)
        except ConfigError as exc:
            raise ConfigError(exc.message, path=(k,)) from None
        if not _in_range(value, fields[k].metadata):
            raise ConfigError(f"{where}: {str(value)[:20]} is out of range; valid: {_range(fields[k].metadata)}", path=(k,))
        kwargs[k] = value
    for field_name, section_name in sections(cls).items():
        if context is not None and section_name in context:
            kwargs[field_name] = context[section_name]
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"stage {name!r}: {exc}") from exc
