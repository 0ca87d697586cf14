"""The audio judge the emulator asks about each enrollment clip: a protocol, and the project's ``check`` as default."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from pipeline.api import check
from pipeline.config import Config, load


class Judgement(Protocol):
    """A judge's answer: ``ok``, else the service's ``code`` and ``message``; ``warnings`` are ``{code, ...}``."""

    @property
    def ok(self) -> bool: ...

    @property
    def code(self) -> str | None: ...

    @property
    def message(self) -> str: ...

    @property
    def warnings(self) -> Sequence[Mapping[str, str]]: ...


class Judge(Protocol):
    """Judges the audio file at a path as the service would; called in a worker thread, one file at a time."""

    def __call__(self, path: Path) -> Judgement: ...


class ProjectJudge:
    """The project's own ``pipeline.api.check`` with ``config`` (default: the bundled check chain, loaded on first use)."""

    def __init__(self, config: Config | None = None) -> None:
        self._config = config

    def __call__(self, path: Path) -> Judgement:
        if self._config is None:
            self._config = load(chains=("check",))
        return check(path, self._config)
