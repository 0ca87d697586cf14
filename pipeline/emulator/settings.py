"""The emulator's behaviour settings: keys, deploy delay, quota, rate limits, upload limits and faults."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import ConfigError

from .faults import Faults
from .protocol import DEFAULT_API_KEY, SYSTEM_VOICES


@dataclass(frozen=True)
class Settings:
    """Emulator behaviour. Times in seconds; ``None`` rate disables rate limiting.

    ``api_keys`` are never shown in the repr. Raises ConfigError for a burst under 1 or no key.
    """

    api_keys: tuple[str, ...] = field(default=(DEFAULT_API_KEY,), repr=False)
    deploy_delay_s: float = 10.0
    quota: int = 1000
    rate_limit_rps: float | None = 20.0
    rate_limit_burst: int = 40
    policy_rps: float = 100.0
    upload_ttl_s: float = 48 * 3600.0
    policy_expire_s: int = 300
    max_upload_mb: int = 100
    max_fetch_mb: int = 32
    fetch_timeout_s: float = 30.0
    strict_prefix: bool = True
    undeploy_codes: frozenset[str] = frozenset()
    undeploy_warnings: frozenset[str] = frozenset()
    idle_timeout_s: float = 23.0
    system_voices: tuple[str, ...] = SYSTEM_VOICES
    faults: Faults = field(default_factory=Faults)

    def __post_init__(self) -> None:
        if not self.api_keys:
            raise ConfigError("the emulator needs at least one API key")
        if self.rate_limit_rps and self.rate_limit_burst < 1:
            raise ConfigError(f"rate-limit burst must be at least 1, not {self.rate_limit_burst}")

    @classmethod
    def of(cls, **fields: Any) -> Settings:
        """Settings from keyword fields; ``faults`` may be a mapping, ``api_keys`` any sequence."""
        return cls(**_coerce(fields))

    def changed(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (coerced as in ``of``)."""
        return dataclasses.replace(self, **_coerce(changes))


def _coerce(fields: dict[str, Any]) -> dict[str, Any]:
    out = dict(fields)
    if isinstance(out.get("faults"), Mapping):
        out["faults"] = Faults.from_mapping(out["faults"])
    if "api_keys" in out:
        out["api_keys"] = tuple(out["api_keys"])
    return out
