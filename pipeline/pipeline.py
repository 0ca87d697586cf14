"""Pipeline: an ordered tuple of stages, itself callable on a clip, checked for order when built."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .clip import FACT_NAMES, Clip, Fact
from .errors import ConfigError, PipelineError
from .stage import Scouting, Session, Stage


def check_order(stages: tuple[Stage, ...], given: frozenset[Fact] = frozenset()) -> None:
    """Refuse an order that cannot work, in one line naming the stage and the fix (ConfigError):
    a stage needing a fact no earlier stage provides (nor the input, ``given``); a stage changing
    the audio after the WAV was encoded; a stage that runs in the coordinating process (a
    `Session`) before one that does not."""
    known: set[Fact] = set(given)
    encoder: str | None = "an earlier stage" if "encoded" in given else None
    session: str | None = None
    for i, stage in enumerate(stages):
        where = f"item {i + 1}, {stage.name!r}"
        for fact in sorted(stage.needs - known):
            from . import registry  # only on this error path: listing every stage imports them all

            makers = [n for n, c in registry.available().items() if fact in c.provides and fact not in c.needs]
            raise ConfigError(
                f"{where}: needs {FACT_NAMES[fact]}, which no earlier stage provides; "
                f"put it after one that does: {', '.join(makers) or '(none is installed)'}",
                path=(i,),
            )
        if stage.changes_audio and encoder is not None:
            raise ConfigError(f"{where}: changes the audio after {encoder!r} encoded it; put it before {encoder!r}", path=(i,))
        if session is not None and not isinstance(stage, Session):
            raise ConfigError(
                f"{where}: must come before {session!r}, which runs last, in the coordinating process", path=(i,)
            )
        known |= stage.provides
        if "encoded" in stage.provides:
            encoder = stage.name
        if isinstance(stage, Session):
            session = stage.name


@dataclass(frozen=True)
class Pipeline:
    """Stages applied in order. A PipelineError leaving a stage is stamped with that stage's name.

    ``given`` names the facts the clips it runs on already have (the rest of a chain whose first
    part ran elsewhere)."""

    stages: tuple[Stage, ...] = ()
    given: frozenset[Fact] = frozenset()

    def __post_init__(self) -> None:
        check_order(self.stages, self.given)

    def __call__(self, clip: Clip) -> Clip:
        for stage in self.stages:
            clip = _apply(stage.name, stage, clip)
        return clip

    def __iter__(self) -> Iterator[Stage]:
        return iter(self.stages)

    def __len__(self) -> int:
        return len(self.stages)

    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def provides(self, fact: Fact) -> bool:
        """Whether some stage of the chain provides ``fact``."""
        return any(fact in s.provides for s in self.stages)

    def scouting(self) -> tuple[Pipeline, Scouting] | None:
        """The chain up to and including its first stage that offers scouting, and that stage."""
        for i, stage in enumerate(self.stages):
            if isinstance(stage, Scouting):
                return Pipeline(self.stages[: i + 1]), stage
        return None

    def split_sessions(self) -> tuple[Pipeline, Pipeline]:
        """(the stages any worker can run, the trailing `Session` stages the coordinating process runs)."""
        for i, stage in enumerate(self.stages):
            if isinstance(stage, Session):
                head = Pipeline(self.stages[:i], self.given)
                made = frozenset(self.given).union(*(s.provides for s in head.stages))
                return head, Pipeline(self.stages[i:], made)
        return self, Pipeline((), self.given)

    @contextlib.contextmanager
    def open(self) -> Iterator[Callable[[Clip], Clip]]:
        """The chain with every `Session` stage opened (its client and ledger), for a whole batch."""
        with contextlib.ExitStack() as stack:
            steps = [
                (s.name, stack.enter_context(s.open()) if isinstance(s, Session) else s) for s in self.stages
            ]

            def run(clip: Clip) -> Clip:
                for name, step in steps:
                    clip = _apply(name, step, clip)
                return clip

            yield run


def _apply(name: str, step: Callable[[Clip], Clip], clip: Clip) -> Clip:
    try:
        return step(clip)
    except PipelineError as exc:
        if exc.stage is None:
            exc.stage = name
        raise
