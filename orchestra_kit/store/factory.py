"""``open_store``: the store the settings name (SQLite by default, PostgreSQL by URL)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from ..config import DatabaseSettings, OptimizationFlags
from . import Store
from .pg import PgStore
from .protocol import SharedStoreProtocol, StoreProtocol

__all__ = ["backend_name", "open_store"]


def backend_name(settings: DatabaseSettings) -> str:
    """``"postgresql"`` when ``database.url`` is set, else ``"sqlite"``."""
    return "postgresql" if settings.url else "sqlite"


def open_store(settings: DatabaseSettings, flags: OptimizationFlags, *, project_root: Path,
               clock: Callable[[], float] = time.time,
               instance_id: str | None = None) -> StoreProtocol:
    """An unstarted store (use ``async with``): PgStore for a URL, else the SQLite Store."""
    if settings.url:
        return PgStore(settings.url, settings, flags, project_root=project_root, clock=clock,
                       instance_id=instance_id)
    return Store(settings, flags, project_root=project_root, clock=clock)


def _conforms(sqlite: Store, pg: PgStore) -> tuple[StoreProtocol, SharedStoreProtocol]:
    """Never called: mypy checks here that both stores satisfy their protocols."""
    return sqlite, pg
