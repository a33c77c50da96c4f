"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestra_kit.config import DatabaseSettings, OptimizationFlags
from orchestra_kit.store import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """An empty store on a fresh SQLite file, its project root ``tmp_path/project`` (a
    test module that needs another store defines its own ``store``)."""
    (tmp_path / "project").mkdir()
    async with Store(DatabaseSettings(path=str(tmp_path / "t.db")), OptimizationFlags(),
                     project_root=tmp_path / "project") as s:
        yield s
