"""Pipeline: an ordered tuple of stages, itself callable on a clip."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .clip import Clip
from .errors import PipelineError
from .stage import Stage


@dataclass(frozen=True)
class Pipeline:
    """Stages applied in order. A PipelineError leaving a stage is stamped with that stage's name."""

    stages: tuple[Stage, ...] = ()

    def __call__(self, clip: Clip) -> Clip:
        for stage in self.stages:
            try:
                clip = stage(clip)
            except PipelineError as exc:
                if exc.stage is None:
                    exc.stage = stage.name
                raise
        return clip

    def __iter__(self) -> Iterator[Stage]:
        return iter(self.stages)

    def __len__(self) -> int:
        return len(self.stages)

    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def until(self, name: str) -> Pipeline:
        """The stages up to and including the first one called ``name`` (all, if absent)."""
        out = []
        for s in self.stages:
            out.append(s)
            if s.name == name:
                break
        return Pipeline(tuple(out))

    def after(self, name: str) -> Pipeline:
        """The stages after the first one called ``name`` (none, if absent)."""
        names = self.names()
        if name not in names:
            return Pipeline(())
        return Pipeline(self.stages[names.index(name) + 1 :])
