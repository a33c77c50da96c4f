"""The application's state object and its typed ``web.AppKey``.

Routes and middleware read everything through :data:`STATE`; the components (store,
scheduler, limiter) are filled in by the application's ``cleanup_ctx`` before the
first request and cleared after the last.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from ..config import Settings
from ..errors import ServiceUnavailableError
from ..metrics import Metrics
from ..store.protocol import StoreProtocol

__all__ = ["IDENTITY", "REQUEST_ID", "STATE", "AppState", "Phase"]


class Phase(enum.StrEnum):
    """Lifecycle of the service: health answers 503 unless READY."""

    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclass(eq=False, kw_only=True)
class AppState:
    """Everything a request handler needs."""

    settings: Settings
    project_root: Path
    metrics: Metrics = field(default_factory=Metrics)
    store: StoreProtocol | None = None
    scheduler: Any = None
    backend: Any = None
    llm_limiter: Any = None
    pool: Any = None
    chat: Any = None  # the Slack adapter, when chat.enabled
    phase: Phase = Phase.STARTING
    drained: asyncio.Event | None = None
    #: Encoded answers of cached reads (None when the store's query cache is off).
    responses: Any = None
    #: Process resources and event-loop lag (:class:`~.probes.ResourceProbe`).
    probe: Any = None
    #: The request pipeline (:func:`~.middleware.build_pipeline`), set by the app factory.
    pipeline: Any = None
    id_prefix: str = field(default_factory=lambda: os.urandom(4).hex())
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    #: Open/refused connection counts (set by the runner; None in bare test apps).
    connection_stats: Any = None
    #: Open SSE streams per task id (bounded by ``server.max_sse_subscribers_per_task``).
    sse_streams: dict[int, int] = field(default_factory=dict)

    def new_request_id(self) -> str:
        """A process-unique request id (cheap: a random prefix and a counter)."""
        return f"{self.id_prefix}-{next(self._ids):x}"

    def require_store(self) -> StoreProtocol:
        """The store, or 503 when the service is not (or no longer) running."""
        if self.store is None:
            raise ServiceUnavailableError(f"The service is {self.phase}; try again shortly")
        return self.store

    def require_scheduler(self) -> Any:
        """The scheduler, or 503 when the service is not (or no longer) running."""
        if self.scheduler is None or self.phase is not Phase.READY:
            raise ServiceUnavailableError(f"The service is {self.phase}; it takes no new tasks")
        return self.scheduler


STATE: web.AppKey[AppState] = web.AppKey("orchestra_state", AppState)
#: The request id of the current request (set by the pipeline middleware).
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
#: The employee the caller's API key is bound to (``server.api_keys`` entry ``KEY=NAME``);
#: absent for anonymous callers and operator (unbound) keys.
IDENTITY: web.RequestKey[str] = web.RequestKey("identity", str)
