"""The Stage protocol (a small frozen dataclass whose fields are its typed options) and what a stage may offer."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import field
from typing import Any, ClassVar, Protocol, runtime_checkable

from .clip import Clip, Cut, Fact


@runtime_checkable
class Stage(Protocol):
    """A step of a pipeline. ``__call__`` returns a new Clip and never mutates its input.

    ``name`` is the YAML name (== module name in ``stages/``); ``changes_audio`` is False for
    stages that only measure or judge. ``needs`` are the facts (Clip fields: ``speech``, ``cut``,
    ``encoded``) an earlier stage must provide; ``provides`` the facts this stage sets. A chain
    whose order breaks them is refused when it is built, before any audio is read.
    """

    name: ClassVar[str]
    changes_audio: ClassVar[bool]
    needs: ClassVar[frozenset[Fact]]
    provides: ClassVar[frozenset[Fact]]

    def __call__(self, clip: Clip) -> Clip: ...


@runtime_checkable
class Scouting(Protocol):
    """A stage that cuts a stretch of at most ``span_s()`` seconds out of its input (it provides
    ``cut``). The runner scouts long inputs for it: it runs the chain up to this stage on a few
    promising stretches only, and keeps the best-scoring cut, stopping early once one qualifies."""

    def span_s(self) -> float: ...

    def qualifies(self, cut: Cut) -> bool: ...


@runtime_checkable
class DetectsSpeech(Protocol):
    """A stage that finds speech with these settings; whoever detects speech for it ahead of
    time (a long input judged as it streams) uses the same ones."""

    vad_threshold: float
    merge_gap_s: float


@runtime_checkable
class Session(Protocol):
    """A stage that holds connections (a service client, a ledger) while a batch runs: ``open()``
    gives the stage's working form, closed when the batch ends. Such a stage runs in the process
    that coordinates the batch, after every stage that does not (``Pipeline`` checks the order),
    so one client and one rate limit serve all workers."""

    def open(self) -> AbstractContextManager[Callable[[Clip], Clip]]: ...


def option(
    default: Any, help: str, *, min: float | None = None, max: float | None = None, above: float | None = None  # noqa: A002 - mirrors argparse and the builtins
) -> Any:
    """Declare a stage option with its default, the one-line help shown by `voiceprep stages`, and
    for numbers the range a config may set: ``min``/``max`` inclusive, ``above`` an exclusive
    lower bound. The registry refuses a value outside it, naming the range."""
    bounds = {k: v for k, v in (("min", min), ("max", max), ("above", above)) if v is not None}
    return field(default=default, metadata={"help": help, **bounds})


def section(name: str, default_factory: Callable[[], Any], help: str) -> Any:  # noqa: A002 - mirrors argparse
    """Declare a field filled from the config's top-level section ``name`` (not an option: it is
    given by the config, e.g. the `enroll:` settings, when the chain is built)."""
    return field(default_factory=default_factory, metadata={"section": name, "help": help})
