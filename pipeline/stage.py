"""The Stage protocol: a small frozen dataclass whose fields are its typed options."""

from __future__ import annotations

from dataclasses import field
from typing import Any, ClassVar, Protocol, runtime_checkable

from .clip import Clip


@runtime_checkable
class Stage(Protocol):
    """A step of a pipeline. ``__call__`` returns a new Clip and never mutates its input.

    ``name`` is the YAML name (== module name in ``stages/``); ``changes_audio`` is False for
    stages that only measure or judge.
    """

    name: ClassVar[str]
    changes_audio: ClassVar[bool]

    def __call__(self, clip: Clip) -> Clip: ...


def option(default: Any, help: str) -> Any:  # noqa: A002 - mirrors argparse
    """Declare a stage option with its default and the one-line help shown by `voiceprep stages`."""
    return field(default=default, metadata={"help": help})
