"""Service settings: the API key, base URL and workspace (like the SDK), and the `enroll:` section."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import quote, quote_plus

from pipeline.errors import ConfigError

BEIJING_BASE_URL = "https://dashscope.aliyuncs.com/api/v1"
INTERNATIONAL_BASE_URL = "https://dashscope-intl.aliyuncs.com/api/v1"
DEFAULT_BASE_URL = BEIJING_BASE_URL
MAAS_REGIONS = ("cn-beijing", "ap-southeast-1", "us-east-1", "cn-hongkong", "eu-central-1", "ap-northeast-1")
# SDK 2.x's shared host per region when no workspace is set (regions without one use the international host)
SHARED_BASE_URLS = {
    "cn-beijing": BEIJING_BASE_URL,
    "ap-southeast-1": INTERNATIONAL_BASE_URL,
    "cn-hongkong": "https://cn-hongkong.dashscope.aliyuncs.com/api/v1",
    "us-east-1": INTERNATIONAL_BASE_URL,
    "eu-central-1": INTERNATIONAL_BASE_URL,
    "ap-northeast-1": INTERNATIONAL_BASE_URL,
}
MAX_TIMEOUT_S = 3600.0  # per request
MAX_RETRIES = 100

ENROLLMENT_MODEL = "voice-enrollment"
DEFAULT_TARGET_MODEL = "cosyvoice-v1"
TARGET_MODELS = (
    "cosyvoice-v1",
    "cosyvoice-v2",
    "cosyvoice-v3-flash",
    "cosyvoice-v3-plus",
    "cosyvoice-v3.5-flash",
    "cosyvoice-v3.5-plus",
    "qwen-audio-3.0-tts-flash",
    "qwen-audio-3.0-tts-plus",
)
PREFIX_RE = re.compile(r"^[a-z0-9]{1,10}$")
VOICE_QUOTA = 1000

UploadMethod = Literal["dashscope", "s3", "public"]
UPLOAD_METHODS: tuple[str, ...] = get_args(UploadMethod)


def workspace_base_url(workspace_id: str, region: str = "cn-beijing") -> str:
    """The workspace host of the newest docs: ``https://{ws}.{region}.maas.aliyuncs.com/api/v1``."""
    if region not in MAAS_REGIONS:
        raise ConfigError(f"unknown region {region!r}; valid regions: {', '.join(MAAS_REGIONS)}")
    if not re.fullmatch(r"[A-Za-z0-9-]+", workspace_id):
        raise ConfigError(f"workspace id {workspace_id!r} may hold only letters, digits and dashes")
    return f"https://{workspace_id}.{region}.maas.aliyuncs.com/api/v1"


def check_prefix(prefix: str) -> str:
    """The prefix, if it matches ``^[a-z0-9]{1,10}$`` (the rule every service version accepts)."""
    if not isinstance(prefix, str) or not PREFIX_RE.match(prefix):
        raise ConfigError(
            f"prefix {prefix!r} is invalid: use 1-10 lowercase letters or digits (e.g. 'alice01'); "
            "the service refuses longer prefixes and some versions refuse capitals and underscores"
        )
    return prefix


def check_target_model(model: str) -> str:
    if model not in TARGET_MODELS:
        raise ConfigError(f"unknown target model {model!r}; valid models: {', '.join(TARGET_MODELS)}")
    return model


def check_api_key(value: str, source: str = "the API key") -> str:
    """``value`` if it is a usable key: printable ASCII without spaces. The error names ``source``
    (the variable or file it came from) and the offending character's position, never the key."""
    if not value:
        raise ConfigError(f"{source} is empty")
    for i, ch in enumerate(value, 1):
        if "\x21" <= ch <= "\x7e":
            continue
        if ch in "\r\n":
            what = "a line break"
        elif ch.isspace():
            what = "whitespace"
        elif ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F:
            what = "a control character"
        else:
            what = "a non-ASCII character"
        raise ConfigError(
            f"{source} holds {what} at character {i}: an API key is printable ASCII without spaces; "
            "copy it again from the Model Studio console (the key was not used)"
        )
    return value


class ApiKey:
    """The DashScope API key. Its text is shown only by ``reveal()``: never by repr, str or pickling.

    A key that is not printable ASCII without spaces is refused (``ConfigError`` naming ``source``):
    it could not be sent in a header, and the HTTP library's error would print it.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str, source: str = "the API key") -> None:
        self._value = check_api_key(value, source)

    def reveal(self) -> str:
        return self._value

    def forms(self) -> tuple[str, ...]:
        """The key as it may appear in text: raw, percent-encoded (both cases), JSON- or repr-escaped;
        longest first, so that ``scrub`` never leaves part of a longer form behind."""
        key = self._value
        encoded = quote(key, safe="")
        found = {key, encoded, quote_plus(key, safe=""), re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), encoded),
                 json.dumps(key)[1:-1], repr(key)[1:-1]}
        return tuple(sorted(found, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        """``text`` with every form of the key replaced by ``***``."""
        for form in self.forms():
            if form in text:
                text = text.replace(form, "***")
        return text

    def __repr__(self) -> str:
        return "ApiKey('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("ApiKey", self._value))

    def __reduce__(self) -> Any:
        raise TypeError("an API key is never pickled; read it from DASHSCOPE_API_KEY in each process")


def _env(env: Mapping[str, str], name: str) -> str | None:
    """A variable's value; empty counts as unset, as in the SDK."""
    value = env.get(name)
    return value if value else None


def _env_seconds(env: Mapping[str, str], name: str) -> float | None:
    raw = _env(env, name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT_S):
        raise ConfigError(f"{name}={raw[:40]!r} must be a number of seconds above 0 and at most {MAX_TIMEOUT_S:.0f}")
    return value


def _env_count(env: Mapping[str, str], name: str) -> int | None:
    raw = _env(env, name)
    if raw is None:
        return None
    if not re.fullmatch(r"[0-9]{1,3}", raw.strip()) or int(raw) > MAX_RETRIES:
        raise ConfigError(f"{name}={raw[:40]!r} must be a whole number from 0 to {MAX_RETRIES}")
    return int(raw)


@dataclass(frozen=True)
class ServiceSettings:
    """Where and how to reach the service: key, ``base_url`` (ending in ``/api/v1``), workspace header,
    and the SDK's ``timeout_s`` / ``max_retries`` when the environment sets them (None: the `enroll:` ones)."""

    api_key: ApiKey = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    workspace: str | None = None
    timeout_s: float | None = None
    max_retries: int | None = None

    def __post_init__(self) -> None:
        url = self.base_url.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", url):
            raise ConfigError(f"base URL {self.base_url!r} must start with http:// or https://")
        object.__setattr__(self, "base_url", url)

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        workspace: str | None = None,
        home: Path | None = None,
    ) -> ServiceSettings:
        """Read the SDK's variables, with the SDK's precedence (arguments win over the environment).

        The key: ``DASHSCOPE_API_KEY``, else the file named by ``DASHSCOPE_API_KEY_FILE_PATH``, else
        ``~/.dashscope/api_key``. The base URL: ``DASHSCOPE_BASE_URL`` (SDK 2.x), else
        ``DASHSCOPE_HTTP_BASE_URL`` (1.x, and 2.x's fallback); else ``DASHSCOPE_REGION`` (2.x) gives the
        workspace host of that region when a workspace is set (``DASHSCOPE_WORKSPACE``, else
        ``DASHSCOPE_WORKSPACE_ID``) or that region's shared host; else ``DASHSCOPE_API_REGION`` +
        ``DASHSCOPE_WORKSPACE_ID`` (1.x) give the workspace host; else Beijing. ``DASHSCOPE_WORKSPACE``
        sends the ``X-DashScope-WorkSpace`` header. ``DASHSCOPE_TIMEOUT`` (seconds per request) and
        ``DASHSCOPE_MAX_RETRIES`` override `enroll:`'s ``request_timeout_s`` and ``max_retries``.
        """
        e = os.environ if env is None else env
        if api_key:
            key = ApiKey(api_key, "the api_key argument")
        elif _env(e, "DASHSCOPE_API_KEY"):
            key = ApiKey(e["DASHSCOPE_API_KEY"], "DASHSCOPE_API_KEY")
        else:
            found = _key_from_file(e, home)
            if found is None:
                raise ConfigError(
                    "no API key: set DASHSCOPE_API_KEY (Model Studio console > API keys); "
                    "the key must belong to the same region as DASHSCOPE_HTTP_BASE_URL"
                )
            key = ApiKey(*found)
        ws = workspace if workspace is not None else _env(e, "DASHSCOPE_WORKSPACE")
        url = base_url or _env(e, "DASHSCOPE_BASE_URL") or _env(e, "DASHSCOPE_HTTP_BASE_URL") or _region_url(e, ws)
        return cls(api_key=key, base_url=url, workspace=ws, timeout_s=_env_seconds(e, "DASHSCOPE_TIMEOUT"),
                   max_retries=_env_count(e, "DASHSCOPE_MAX_RETRIES"))


def _region_url(env: Mapping[str, str], workspace: str | None) -> str:
    """The base URL when none is set: from ``DASHSCOPE_REGION`` (2.x), else ``DASHSCOPE_API_REGION`` (1.x)."""
    region = _env(env, "DASHSCOPE_REGION")
    ws_id = workspace or _env(env, "DASHSCOPE_WORKSPACE_ID")
    if region is not None:
        if region not in MAAS_REGIONS:
            raise ConfigError(f"DASHSCOPE_REGION={region[:40]!r} is not a region; valid: {', '.join(MAAS_REGIONS)}")
        return workspace_base_url(ws_id, region) if ws_id else SHARED_BASE_URLS[region]
    region = _env(env, "DASHSCOPE_API_REGION")
    ws_id = _env(env, "DASHSCOPE_WORKSPACE_ID")
    if region and ws_id:
        return workspace_base_url(ws_id, region)
    if region and region != "cn-beijing":
        raise ConfigError(
            f"DASHSCOPE_API_REGION={region[:40]} needs DASHSCOPE_WORKSPACE_ID (or set DASHSCOPE_HTTP_BASE_URL)"
        )
    return DEFAULT_BASE_URL


def _key_from_file(env: Mapping[str, str], home: Path | None) -> tuple[str, str] | None:
    """(key, where it came from) from ``DASHSCOPE_API_KEY_FILE_PATH`` or ``~/.dashscope/api_key``."""
    named = _env(env, "DASHSCOPE_API_KEY_FILE_PATH")
    candidates = [(Path(named), f"the file named by DASHSCOPE_API_KEY_FILE_PATH ({named})")] if named else []
    if home is not None:
        candidates.append((home / ".dashscope" / "api_key", "~/.dashscope/api_key"))
    elif env is os.environ:
        candidates.append((Path.home() / ".dashscope" / "api_key", "~/.dashscope/api_key"))
    for p, source in candidates:
        try:
            text = p.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if text:
            return text, source
    return None


# --- the `enroll:` section of pipeline.yaml ---------------------------------------------------


def _check_keys(data: Mapping[str, Any], valid: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ConfigError(f"{where} has no key {unknown[0]!r}; valid keys: {', '.join(valid)}")


MAX_SETTING = 1e9  # no `enroll:` number means anything beyond this (seconds, counts, requests per second)


def _show(value: Any) -> str:
    """A config value for an error message, short (a 5000-digit number cannot even be printed)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"a number of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _typed(value: Any, tp: type, where: str, *, allow_none: bool = False) -> Any:
    """``value`` checked against ``tp``; numbers must be finite and at most ``MAX_SETTING`` in size."""
    if value is None and allow_none:
        return None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and tp in (float, int):
        if (isinstance(value, float) and not math.isfinite(value)) or abs(value) > MAX_SETTING:
            raise ConfigError(f"{where}: expected a finite number up to {MAX_SETTING:.0e}, got {_show(value)}")
        if tp is float:
            return float(value)
        if isinstance(value, int):
            return value
    if tp in (str, bool) and isinstance(value, tp):
        return value
    names = {float: "a number", int: "an integer", str: "a string", bool: "true or false"}
    raise ConfigError(f"{where}: expected {names[tp]}{' or null' if allow_none else ''}, got {_show(value)}")


@dataclass(frozen=True)
class S3Settings:
    """An S3-compatible bucket (AWS, Alibaba OSS at ``https://s3.oss-<region>.aliyuncs.com``, MinIO...).

    Credentials come from the usual boto3 sources (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
    a ``profile``), never from pipeline.yaml. The service downloads a presigned GET URL.
    """

    bucket: str
    endpoint_url: str | None = None
    region: str | None = None
    key_prefix: str = "voiceprep/"
    expires_s: int = 86400
    addressing_style: Literal["auto", "virtual", "path"] = "auto"
    profile: str | None = None

    @classmethod
    def from_mapping(cls, data: Any, where: str = "enroll.s3") -> S3Settings:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where} must be a mapping with at least `bucket`")
        _check_keys(data, tuple(f.name for f in fields(cls)), where)
        if "bucket" not in data:
            raise ConfigError(f"{where}.bucket is required")
        style = data.get("addressing_style", "auto")
        if style not in ("auto", "virtual", "path"):
            raise ConfigError(f"{where}.addressing_style: {style!r} is not one of 'auto', 'virtual', 'path'")
        out = cls(
            bucket=_typed(data["bucket"], str, f"{where}.bucket"),
            endpoint_url=_typed(data.get("endpoint_url"), str, f"{where}.endpoint_url", allow_none=True),
            region=_typed(data.get("region"), str, f"{where}.region", allow_none=True),
            key_prefix=_typed(data.get("key_prefix", "voiceprep/"), str, f"{where}.key_prefix"),
            expires_s=_typed(data.get("expires_s", 86400), int, f"{where}.expires_s"),
            addressing_style=style,
            profile=_typed(data.get("profile"), str, f"{where}.profile", allow_none=True),
        )
        if not out.bucket:
            raise ConfigError(f"{where}.bucket must not be empty")
        if not 60 <= out.expires_s <= 7 * 86400:
            raise ConfigError(f"{where}.expires_s must be between 60 and 604800 (7 days, the S3 maximum)")
        return out


@dataclass(frozen=True)
class EnrollSettings:
    """The `enroll:` section of pipeline.yaml, validated strictly (unknown keys and wrong types fail)."""

    target_model: str = DEFAULT_TARGET_MODEL
    prefix: str | None = None
    upload: UploadMethod = "dashscope"
    s3: S3Settings | None = None
    public_base_url: str | None = None
    ledger: str | None = None
    wait: bool = True
    ready_timeout_s: float = 600.0
    poll_interval_s: float = 5.0
    rate_limit_per_s: float = 10.0
    max_retries: int = 3
    request_timeout_s: float = 60.0
    create_attempts: int = 3
    reconcile_delay_s: float = 15.0
    reconcile_timeout_s: float = 120.0
    quota: int = VOICE_QUOTA
    language_hints: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        check_target_model(self.target_model)
        if self.prefix is not None:
            check_prefix(self.prefix)
        if self.upload not in UPLOAD_METHODS:
            raise ConfigError(f"enroll.upload: {self.upload!r} is not one of {', '.join(UPLOAD_METHODS)}")
        if self.upload == "s3" and self.s3 is None:
            raise ConfigError("enroll.upload is 's3' but the enroll.s3 section (bucket, endpoint_url...) is missing")
        if self.upload == "public" and not re.match(r"^https?://", self.public_base_url or ""):
            raise ConfigError("enroll.upload is 'public': set enroll.public_base_url to an http(s) URL")
        for name in ("ready_timeout_s", "poll_interval_s", "rate_limit_per_s", "request_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"enroll.{name} must be positive")
        for name in ("reconcile_delay_s", "reconcile_timeout_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"enroll.{name} must be >= 0")
        if self.max_retries < 0 or self.create_attempts < 1 or self.quota < 1:
            raise ConfigError("enroll.max_retries must be >= 0, create_attempts and quota >= 1")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> EnrollSettings:
        """Build from the raw `enroll:` mapping (``Config.enroll``)."""
        data = dict(data or {})
        valid = tuple(f.name for f in fields(cls))
        _check_keys(data, valid, "enroll")
        kw: dict[str, Any] = {}
        for name in ("target_model", "upload"):
            if name in data:
                kw[name] = _typed(data[name], str, f"enroll.{name}")
        for name in ("prefix", "public_base_url", "ledger"):
            if name in data:
                kw[name] = _typed(data[name], str, f"enroll.{name}", allow_none=True)
        for name in ("ready_timeout_s", "poll_interval_s", "rate_limit_per_s", "request_timeout_s", "reconcile_delay_s",
                     "reconcile_timeout_s"):
            if name in data:
                kw[name] = _typed(data[name], float, f"enroll.{name}")
        for name in ("max_retries", "create_attempts", "quota"):
            if name in data:
                kw[name] = _typed(data[name], int, f"enroll.{name}")
        if "wait" in data:
            kw["wait"] = _typed(data["wait"], bool, "enroll.wait")
        if data.get("s3") is not None:
            kw["s3"] = S3Settings.from_mapping(data["s3"])
        if data.get("language_hints") is not None:
            hints = data["language_hints"]
            if not isinstance(hints, list) or not all(isinstance(h, str) for h in hints):
                raise ConfigError(f"enroll.language_hints: expected a list of language codes, got {hints!r}")
            kw["language_hints"] = tuple(hints)
        return cls(**kw)
