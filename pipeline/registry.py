"""Stage registry: YAML names to stage classes, with strict option checking."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args, get_origin

from .errors import ConfigError

_REGISTRY: dict[str, type[Any]] = {}
_LOADED = False

T = TypeVar("T")


def register(cls: type[T]) -> type[T]:
    """Class decorator: make a stage buildable from YAML by its ``name``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs a class attribute `name`")
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"stage {name} must be a dataclass")
    _REGISTRY[name] = cls
    return cls


def _load_all() -> None:
    """Import every module of the `stages` package so that their @register runs (once)."""
    global _LOADED
    if _LOADED:
        return
    import stages

    for mod in pkgutil.iter_modules(stages.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"stages.{mod.name}")
    _LOADED = True


def available() -> dict[str, type[Any]]:
    """Every registered stage, by YAML name, sorted."""
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def get(name: str) -> type[Any]:
    """The stage class registered as ``name``. By convention the stage lives in ``stages/<name>.py``,
    so only the modules of the stages a config names are imported; any other name loads the
    whole package, for plug-ins and for the list of valid choices."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.isidentifier() and not name.startswith("_"):
        try:
            importlib.import_module(f"stages.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"stages.{name}":
                raise
        if name in _REGISTRY:
            return _REGISTRY[name]
    stages_ = available()
    if name not in stages_:
        raise ConfigError(f"unknown stage {name!r}; valid stages: {', '.join(stages_)}")
    return stages_[name]


@dataclass(frozen=True)
class OptionDoc:
    name: str
    type: str
    default: Any
    help: str


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def options(cls: type[Any]) -> list[OptionDoc]:
    """The options of a stage class: name, type, default and one-line help."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        out.append(OptionDoc(f.name, _type_name(hints[f.name]), default, f.metadata.get("help", "")))
    return out


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
        errors = []
        for arm in get_args(tp):
            try:
                return _coerce(value, arm, where)
            except ConfigError as exc:
                errors.append(exc.message)
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
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported option type {_type_name(tp)}")


def build(name: str, opts: Mapping[str, Any] | None = None) -> Any:
    """Build a stage by YAML name, rejecting unknown options and wrong types with the valid choices."""
    cls = get(name)
    opts = dict(opts or {})
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        choices = ", ".join(valid) if valid else "(none)"
        raise ConfigError(f"stage {name!r} has no option {unknown[0]!r}; valid options: {choices}")
    kwargs = {k: _coerce(v, hints[k], f"stage {name!r} option {k!r}") for k, v in opts.items()}
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"stage {name!r}: {exc}") from exc
