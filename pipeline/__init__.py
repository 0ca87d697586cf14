"""voiceprep: prepare and validate recordings for CosyVoice voice cloning.

Library use::

    from pipeline import check
    verdict = check("take1.m4a")
    if not verdict.ok:
        print(verdict.code, verdict.hint)

Heavy modules (numpy, soundfile, PyAV, the VAD) are imported lazily, on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Clip",
    "ConfigError",
    "Pipeline",
    "PipelineError",
    "SourceInfo",
    "Verdict",
    "__version__",
    "check",
    "load_config",
]

if TYPE_CHECKING:
    from .api import check
    from .clip import Clip, SourceInfo
    from .config import load as load_config
    from .errors import ConfigError, PipelineError
    from .pipeline import Pipeline
    from .verdict import Verdict

_LAZY = {
    "check": ("api", "check"),
    "Clip": ("clip", "Clip"),
    "SourceInfo": ("clip", "SourceInfo"),
    "load_config": ("config", "load"),
    "ConfigError": ("errors", "ConfigError"),
    "PipelineError": ("errors", "PipelineError"),
    "Pipeline": ("pipeline", "Pipeline"),
    "Verdict": ("verdict", "Verdict"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
