"""The durable SQLite store: employees, file leases and requests, tasks.

One writer thread commits writes in groups (``enable_batch_operations``), a pool of
aiosqlite readers serves reads (``enable_connection_pooling``), a generation-checked
TTL cache answers repeated reads (``enable_query_caching``), WAL or rollback journal
(``enable_wal_mode``). See docs/store.md.
"""

from __future__ import annotations

from typing import Self

from .chat_events import ChatEventAPI
from .employees import EmployeeAPI
from .leases import LeaseAPI
from .sqlops import FireReport, RecoveryReport
from .tasks import TaskAPI

__all__ = ["FireReport", "RecoveryReport", "Store"]


class Store(EmployeeAPI, LeaseAPI, TaskAPI, ChatEventAPI):
    """The store: ``async with Store(settings.database, settings.flags, project_root=p) as s``."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self
