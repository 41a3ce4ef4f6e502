"""The directories the analysis may read: a path is resolved (symlinks followed) and must stay inside one of them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sumlab.core.errors import SumlabError


class PathRefused(SumlabError):
    """A path outside the configured roots (``..``, an absolute path elsewhere, a symlink leading out): HTTP 403."""


class Roots:
    """The configured roots (e.g. ``outputs/`` and ``multirun/``), resolved once.

    ``resolve(path)``: ``path`` is relative to the working directory (as ``list_runs`` reports run paths) or
    absolute; it is refused if it contains ``..`` or if, with every symlink followed, it is not inside a root.
    """

    def __init__(self, roots: Iterable[str | Path]) -> None:
        raise NotImplementedError

    @property
    def paths(self) -> tuple[Path, ...]:
        """The roots as given (relative to the working directory or absolute), existing ones only."""
        raise NotImplementedError

    def resolve(self, path: str | Path) -> Path:
        """The real path of ``path`` if it lies inside a root; PathRefused otherwise (it need not exist)."""
        raise NotImplementedError
