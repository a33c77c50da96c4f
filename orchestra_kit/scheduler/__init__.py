"""The scheduler: durable tasks run through an agent backend, in priority order.

Modules: ``queue`` (the ready queue: priority, FIFO, one task per employee) → ``events``
(event fan-out to subscribers, progress files) → ``execution`` (how one task runs) →
``core`` (:class:`Scheduler`: lifecycle, submit, observe, cancel, dispatch) → ``bench``
(``orchestra bench scheduler``).
"""

from .core import Scheduler
from .events import TaskEvent
from .queue import QueueEntry, ReadyQueue

__all__ = ["QueueEntry", "ReadyQueue", "Scheduler", "TaskEvent"]
