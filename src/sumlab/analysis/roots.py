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
        self._given = tuple(Path(r) for r in roots)
        self._real = tuple(r.resolve() for r in self._given)

    @property
    def paths(self) -> tuple[Path, ...]:
        """The roots as given (relative to the working directory or absolute), existing ones only."""
        return tuple(given for given, real in zip(self._given, self._real, strict=True) if real.is_dir())

    def resolve(self, path: str | Path) -> Path:
        """The real path of ``path`` if it lies inside a root; PathRefused otherwise (it need not exist)."""
        given = Path(path)
        if ".." in given.parts:
            raise PathRefused(f"path {str(path)!r} contains '..': name a run by its path under {self._names()}")
        try:
            real = given.resolve()  # relative to the working directory; every symlink followed
        except (OSError, RuntimeError, ValueError) as ex:  # a symlink loop, a NUL byte
            raise PathRefused(
                f"path {str(path)!r} cannot be resolved ({ex}): pick a run under {self._names()}"
            ) from None
        if not any(real == root or real.is_relative_to(root) for root in self._real):
            raise PathRefused(f"path {str(path)!r} is outside the configured roots {self._names()}: pick a run there")
        return real

    def _names(self) -> str:
        return ", ".join(map(str, self._given)) or "(none configured)"
