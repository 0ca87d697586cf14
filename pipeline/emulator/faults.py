"""Fault injection: latency, errors, dropped connections and later failures, per scope and per URL."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipeline.errors import ConfigError

from .protocol import FAULT_SCOPES, GENERIC_INTERNAL, Dropped, Refusal

if TYPE_CHECKING:
    from aiohttp import web


@dataclass(frozen=True)
class ActionFault:
    """Faults injected on one scope (an action, ``get_policy``, ``upload`` or ``synthesis``).

    ``error_rate`` answers ``code`` (default InternalError, 500) instead of serving; ``latency_s``
    delays the answer; ``drop_rate`` closes the connection without an answer; ``undeploy_rate``
    (create/update only) lets the voice end ``UNDEPLOYED``.
    """

    error_rate: float = 0.0
    code: str = "InternalError"
    message: str | None = None
    latency_s: float = 0.0
    drop_rate: float = 0.0
    undeploy_rate: float = 0.0


@dataclass(frozen=True)
class UrlFault:
    """For a create/update ``url`` matching ``pattern`` (regex search): answer ``code`` without fetching.

    ``code`` is a service code (answered synchronously), ``UNDEPLOYED`` (accepted, then fails
    later) or ``OK`` (accepted without fetching: for clients testing with fake URLs).
    """

    pattern: str
    code: str
    message: str | None = None


@dataclass(frozen=True)
class Faults:
    """Fault injection: global ``latency_s``, per-scope ``actions``, per-URL ``urls``; ``seed`` fixes the dice."""

    seed: int | None = None
    latency_s: float = 0.0
    actions: Mapping[str, ActionFault] = field(default_factory=dict)
    urls: tuple[UrlFault, ...] = ()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Faults:
        """Strictly parse ``{seed, latency_s, actions: {scope: {...}}, urls: [{pattern, code, message}]}``."""
        if not isinstance(data, Mapping):
            raise ConfigError("faults: expected a mapping")
        unknown = set(data) - {"seed", "latency_s", "actions", "urls"}
        if unknown:
            raise ConfigError(f"faults: unknown keys {sorted(unknown)}; valid: seed, latency_s, actions, urls")
        actions: dict[str, ActionFault] = {}
        fields = {f.name for f in dataclasses.fields(ActionFault)}
        for scope, spec in (data.get("actions") or {}).items():
            if scope not in FAULT_SCOPES:
                raise ConfigError(f"faults.actions: unknown scope {scope!r}; valid: {', '.join(FAULT_SCOPES)}")
            if not isinstance(spec, Mapping) or set(spec) - fields:
                raise ConfigError(f"faults.actions.{scope}: expected a mapping of {', '.join(sorted(fields))}")
            actions[scope] = ActionFault(**spec)
        urls = []
        for i, spec in enumerate(data.get("urls") or ()):
            if not isinstance(spec, Mapping) or "pattern" not in spec or "code" not in spec:
                raise ConfigError(f"faults.urls[{i}]: expected {{pattern, code[, message]}}")
            if set(spec) - {"pattern", "code", "message"}:
                raise ConfigError(f"faults.urls[{i}]: unknown keys {sorted(set(spec) - {'pattern', 'code', 'message'})}")
            try:
                re.compile(spec["pattern"])
            except re.error as exc:
                raise ConfigError(f"faults.urls[{i}]: bad pattern: {exc}") from None
            urls.append(UrlFault(str(spec["pattern"]), str(spec["code"]), spec.get("message")))
        return cls(
            seed=data.get("seed"), latency_s=float(data.get("latency_s", 0.0)), actions=actions, urls=tuple(urls)
        )

    @classmethod
    def load(cls, path: str | Path) -> Faults:
        """Read a faults file (JSON or YAML)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
            data = yaml.safe_load(text) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read faults file: {exc}", source=str(path)) from None
        return cls.from_mapping(data)

    def for_scope(self, scope: str) -> ActionFault:
        return self.actions.get(scope) or ActionFault()

    def for_url(self, url: str) -> UrlFault | None:
        """The first URL rule matching ``url``, if any."""
        return next((rule for rule in self.urls if re.search(rule.pattern, url)), None)


async def inject(faults: Faults, rng: random.Random, scope: str, request: web.Request | None) -> ActionFault:
    """Apply ``scope``'s latency, dropped connection and injected error; returns its fault spec.

    Raises Dropped (the transport is aborted) or Refusal (the injected code).
    """
    spec = faults.for_scope(scope)
    delay = faults.latency_s + spec.latency_s
    if delay > 0:
        await asyncio.sleep(delay)
    if spec.drop_rate and rng.random() < spec.drop_rate:
        if request is not None and request.transport is not None:
            request.transport.abort()
        raise Dropped(scope)
    if spec.error_rate and rng.random() < spec.error_rate:
        message = spec.message
        if message is None and spec.code == "InternalError":
            message = GENERIC_INTERNAL
        raise Refusal(spec.code, message)
    return spec
