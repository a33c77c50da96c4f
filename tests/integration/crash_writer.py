"""Child process for test_store_crash: acknowledged writes until SIGKILLed.

Usage: ``python crash_writer.py DBPATH``. Prints ``READY`` once the store is open, then
one line per acknowledged write, each written and flushed only AFTER the awaited store
call returned (so every printed line is a write the store claimed to have committed):
``E <name>`` (hired), ``T <id>`` (task created), ``R <id>`` (task moved to running).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from orchestra_kit.config import DatabaseSettings, OptimizationFlags
from orchestra_kit.models import TaskStatus
from orchestra_kit.store import Store

WORKERS = 16


def ack(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def worker(store: Store, prefix: str, w: int) -> None:
    for i in range(1_000_000):
        name = f"{prefix}-{w}-{i}"
        await store.hire(name, "dev")
        ack(f"E {name}")
        task = await store.create_task(name, f"task {i}", priority=i % 11)
        ack(f"T {task.id}")
        if i % 2 == 0:
            await store.transition(task.id, TaskStatus.RUNNING, count_attempt=True)
            ack(f"R {task.id}")


async def main(db: str) -> None:
    settings = DatabaseSettings(path=db)
    async with Store(settings, OptimizationFlags(), project_root=Path(db).parent) as store:
        await store.recover(max_attempts=3)
        ack("READY")
        prefix = f"p{os.getpid()}"
        await asyncio.gather(*(worker(store, prefix, w) for w in range(WORKERS)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
