"""File lists of many request items checked against one project root, cheaply.

A maximal ``POST /tasks/batch`` holds 1,000 tasks x 100 paths. Checking each path from
scratch resolved the root once per path and deduplicated each list in O(n^2); here the
root is resolved once per request, each distinct path string is normalised once (the
same file named by many tasks costs one check), each directory's links are looked up
once (``normalise_path``'s ``links`` cache), and duplicates are dropped with a set.
The rules are :func:`orchestra_kit.models.normalise_path`'s, unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ValidationError
from ..models import MAX_FILES_PER_CALL, normalise_path

__all__ = ["FilesValidator"]


class _ResolvedRoot(type(Path())):  # type: ignore[misc]
    """A root already resolved: ``resolve()`` is free (normalise_path calls it per path)."""

    def resolve(self, strict: bool = False) -> _ResolvedRoot:
        return self


class FilesValidator:
    """Normalises file lists against ``root``, memoising each distinct path string."""

    def __init__(self, root: Path) -> None:
        self.root: Path = _ResolvedRoot(Path(root).resolve())
        self._memo: dict[str, str] = {}
        self._links: dict[str, str | None] = {}  # each directory's link lookup, once

    def __call__(self, files: Any, field: str = "files") -> list[str]:
        """The normalised, de-duplicated list (first occurrence order); ValidationError
        naming ``field[i]`` for the first bad path."""
        if not isinstance(files, list | tuple):
            raise ValidationError(field, f"must be a list of paths, got {type(files).__name__}")
        if len(files) > MAX_FILES_PER_CALL:
            raise ValidationError(
                field, f"must hold at most {MAX_FILES_PER_CALL} paths, got {len(files)}")
        memo = self._memo
        out: list[str] = []
        seen: set[str] = set()
        for i, raw in enumerate(files):
            norm = memo.get(raw) if isinstance(raw, str) else None
            if norm is None:
                norm = normalise_path(self.root, raw, f"{field}[{i}]", links=self._links)
                memo[raw] = norm
            if norm not in seen:
                seen.add(norm)
                out.append(norm)
        return out
