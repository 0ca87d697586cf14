"""Load pipeline.yaml strictly: unknown stages, options or types fail before any audio is read."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import registry
from .errors import ConfigError
from .pipeline import Pipeline

TOP_LEVEL_KEYS = ("check", "run", "enroll")
CHAINS = ("check", "run")


def default_config_path() -> Path:
    """The bundled pipeline.yaml (inside the wheel, or at the root of a source checkout)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "pipeline.yaml", here.parent / "pipeline.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError("the bundled pipeline.yaml is missing from this installation")


class _Sections(Mapping[str, Any]):
    """The config's sections as the typed settings stages are built with, parsed on first use
    (a chain that reads no section never parses one)."""

    def __init__(self, config: Config) -> None:
        self._config = config

    def __getitem__(self, key: str) -> Any:
        if key != "enroll":
            raise KeyError(key)
        from .service.settings import EnrollSettings

        return EnrollSettings.from_mapping(self._config.enroll)

    def __iter__(self) -> Iterator[str]:
        return iter(("enroll",))

    def __len__(self) -> int:
        return 1


@dataclass(frozen=True)
class Config:
    """A loaded pipeline.yaml: the `check` chain, the `run` chain and the raw `enroll` section.

    Each chain is built (and strictly validated) from its YAML list on first use; ``load`` and
    ``parse`` build the chains they are asked for up front, so a bad one fails before any audio.
    """

    check_spec: Any = None
    run_spec: Any = None
    enroll: Mapping[str, Any] = field(default_factory=dict)
    path: str | None = None

    @functools.cached_property
    def check(self) -> Pipeline:
        return self._chain("check")

    @functools.cached_property
    def run(self) -> Pipeline:
        return self._chain("run")

    def with_run(self, chain: Pipeline) -> Config:
        """This config with ``chain`` as its `run` chain (e.g. a chain without its enroll stage)."""
        new = dataclasses.replace(self)
        new.__dict__["run"] = chain  # the cached_property's slot: `run` is now this chain
        if "check" in self.__dict__:
            new.__dict__["check"] = self.__dict__["check"]
        return new

    def _chain(self, where: str) -> Pipeline:
        try:
            chain = build_chain(self.check_spec if where == "check" else self.run_spec, where, _Sections(self))
            _check_rules_apply(chain, where)
            return chain
        except ConfigError as exc:
            raise ConfigError(exc.message, source=self.path, path=exc.path) from None


def _check_rules_apply(chain: Pipeline, where: str) -> None:
    """A chain must apply the service's rules (a stage with ``judges_upload``), in `run` to the
    WAV that is written (after the stage that encodes it): leaving them out would pass what the
    service refuses."""
    judges = [i for i, s in enumerate(chain.stages) if getattr(type(s), "judges_upload", False)]
    if not judges:
        raise ConfigError(f"{where}: no stage applies the service's rules; add `validate`", path=(where,))
    if where == "run":
        encoders = [i for i, s in enumerate(chain.stages) if "encoded" in s.provides]
        if not encoders:
            raise ConfigError("run: no stage makes the WAV that is written; add `encode` before `validate`", path=(where,))
        if max(judges) < encoders[0]:
            raise ConfigError("run: the service's rules must judge the WAV that is written; put `validate` after `encode`",
                              path=(where,))


def build_chain(spec: Any, where: str, context: Mapping[str, Any] | None = None) -> Pipeline:
    """Build a Pipeline from a YAML list of `name` or `{name: {options}}` items."""
    if spec is None:
        return Pipeline(())
    if not isinstance(spec, list):
        raise ConfigError(f"{where}: expected a list of stages, got {type(spec).__name__}")
    stages = []
    for i, item in enumerate(spec):
        if isinstance(item, str):
            name, opts = item, dict[str, Any]()
        elif isinstance(item, Mapping) and len(item) == 1:
            name, opts = next(iter(item.items()))
            if opts is None:
                opts = {}
            if not isinstance(opts, Mapping):
                raise ConfigError(f"{where}[{i}] {name!r}: options must be a mapping, got {opts!r}")
        else:
            raise ConfigError(f"{where}[{i}]: expected `name` or `{{name: {{options}}}}`, got {item!r}", path=(where, i))
        if not isinstance(name, str):
            raise ConfigError(f"{where}[{i}]: stage name must be a string, got {name!r}", path=(where, i))
        try:
            stages.append(registry.build(name, opts, context=context))
        except ConfigError as exc:
            raise ConfigError(exc.message, path=(where, i, name, *exc.path) if exc.path else (where, i)) from None
    if not stages:
        raise ConfigError(f"{where}: the chain is empty; remove the `{where}:` key to use the bundled default", path=(where,))
    try:
        return Pipeline(tuple(stages))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.message}", path=(where, *exc.path)) from None


def parse(
    data: Any, source: str | None = None, *, chains: tuple[str, ...] = CHAINS, defaults: Mapping[str, Any] | None = None
) -> Config:
    """Validate a parsed YAML document and build the ``chains`` named (both by default; a chain
    left out is validated when first used: `voiceprep check` builds only `check`). A section the
    document leaves out (or sets to null) is taken from ``defaults`` (the bundled pipeline.yaml's
    sections unless given), so a rule is never switched off by omission."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError("the top level must be a mapping with keys " + ", ".join(TOP_LEVEL_KEYS), source=source)
    unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r}; valid keys: {', '.join(TOP_LEVEL_KEYS)}", source=source,
                          path=(unknown[0],))
    if any(data.get(k) is None for k in TOP_LEVEL_KEYS) and defaults is None:
        defaults = _bundled_data()
    merged = {k: data[k] if data.get(k) is not None else (defaults or {}).get(k) for k in TOP_LEVEL_KEYS}
    enroll = merged["enroll"] or {}
    if not isinstance(enroll, Mapping):
        raise ConfigError("`enroll` must be a mapping", source=source, path=("enroll",))
    config = Config(check_spec=merged["check"], run_spec=merged["run"], enroll=dict(enroll), path=source)
    for name in chains:
        getattr(config, name)  # builds it now: a bad chain fails here
    return config


@functools.cache
def _bundled_data() -> Mapping[str, Any]:
    """The bundled pipeline.yaml's sections, parsed."""
    raw = default_config_path().read_bytes()
    frozen = _frozen(raw)
    if frozen is not None:
        return frozen
    import yaml

    return yaml.safe_load(raw.decode("utf-8")) or {}


# The bundled pipeline.yaml as parsed, stamped with its size and CRC: `check` with the default
# config skips importing PyYAML. A bundled pipeline.yaml that no longer matches the stamp is
# simply parsed as YAML.
FROZEN_DEFAULT = Path(__file__).resolve().parent / "default_config.json"


def freeze_default() -> str:
    """The text of ``FROZEN_DEFAULT`` for the bundled pipeline.yaml as it is now."""
    import json
    import zlib

    import yaml

    raw = default_config_path().read_bytes()
    data = yaml.safe_load(raw.decode("utf-8"))
    return json.dumps({"size": len(raw), "crc32": zlib.crc32(raw), "config": data}, indent=1) + "\n"


def _frozen(raw: bytes) -> Any:
    """The parsed default config if ``raw`` is the file it was frozen from, else None."""
    import json
    import zlib

    try:
        frozen = json.loads(FROZEN_DEFAULT.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(frozen, dict) or frozen.get("size") != len(raw) or frozen.get("crc32") != zlib.crc32(raw):
        return None
    return frozen.get("config")


def load(path: str | Path | None = None, *, chains: tuple[str, ...] = CHAINS) -> Config:
    """Load a pipeline.yaml (the bundled default when ``path`` is None); see ``parse`` for ``chains``."""
    p = Path(path) if path is not None else default_config_path()
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror}", source=str(p)) from None
    if path is None:
        frozen = _frozen(raw)
        if frozen is not None:
            return parse(frozen, str(p), chains=chains)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("not valid YAML: the file is not UTF-8 text", source=str(p)) from None
    import yaml

    try:
        # The libyaml safe loader when the wheel has it (faster); both are safe loaders.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        data = yaml.load(text, Loader=loader)  # noqa: S506
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(p)
        raise ConfigError(f"not valid YAML: {exc.problem or exc.context}", source=where) from None
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: an integer with thousands of digits
        raise ConfigError(f"not valid YAML: {str(exc).splitlines()[0][:120]}", source=str(p)) from None
    try:
        return parse(data, str(p), chains=chains)
    except ConfigError as exc:
        raise ConfigError(exc.message, source=_position(p, text, exc.path), path=exc.path) from None


def _position(path: Path, text: str, where: tuple[str | int, ...]) -> str:
    """``FILE:LINE:COLUMN`` of the value at ``where`` in the YAML ``text`` (as near as it can be
    found), or just ``FILE``."""
    import yaml

    try:
        node: Any = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        return str(path)
    best = node
    for step in where:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == step), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
        else:
            node = None
        if node is None:
            break
        best = node
    if best is None:
        return str(path)
    return f"{path}:{best.start_mark.line + 1}:{best.start_mark.column + 1}"
