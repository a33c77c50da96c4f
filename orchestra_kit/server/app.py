"""The application factory and :class:`Service`, an in-process server on a loopback port.

``create_app`` wires the routes and the pipeline middleware; its ``cleanup_ctx`` owns,
in order, the agents' HTTP client pool, the store, the LLM token bucket, the backend
and the scheduler: each is set up before ``yield`` and closed after it in reverse
order, and teardown errors are collected and raised together rather than dropped.
Components handed in (``store=``, ``scheduler=``) are used but never closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Self

from aiohttp import web

from ..config import Settings
from ..errors import ConfigError
from ..store.protocol import StoreProtocol
from . import codec
from .middleware import build_pipeline
from .protocol import AcceptErrorFilter, GuardedRunner
from .routes_employees import routes as employee_routes
from .routes_files import routes as file_routes
from .routes_slack import chat_context
from .routes_slack import routes as slack_routes
from .routes_system import routes as system_routes
from .routes_tasks import routes as task_routes
from .state import STATE, AppState, Phase

__all__ = ["STATE", "Service", "create_app"]

log = logging.getLogger("orchestra_kit.server")

Ctx = Callable[[web.Application], AsyncIterator[None]]


def _workspace_root(settings: Settings, project_root: Path) -> Path:
    ws = Path(settings.workspace_dir)
    return ws if ws.is_absolute() else project_root / ws


def _make_backend(settings: Settings, pool: Any, acquire: Any, workspace_root: Path) -> Any:
    """The configured agent backend; opencode keeps its own state beside the workspaces
    (a dot-folder: no employee name starts with a dot, so none can collide with it)."""
    from ..agents import make_backend

    return make_backend(settings.agents, pool=pool, acquire=acquire,
                        state_dir=workspace_root / ".opencode-state")


async def _close(obj: Any, errors: list[Exception]) -> None:
    try:
        await obj.aclose()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - collected, raised after every teardown ran
        errors.append(exc)


def _contexts(state: AppState, *, own_store: bool, own_scheduler: bool) -> list[Ctx]:
    """The cleanup contexts in setup order (teardown runs in reverse)."""
    settings = state.settings
    errors: list[Exception] = []

    async def probe_ctx(app: web.Application) -> AsyncIterator[None]:
        from .probes import ResourceProbe

        async with ResourceProbe() as probe:
            state.probe = probe
            yield
        state.probe = None

    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        if own_scheduler:
            from ..agents.http import HttpClientPool

            state.pool = HttpClientPool(settings.agents.connection_pool_size,
                                        settings.flags.enable_connection_pooling,
                                        settings.agents.request_timeout)
        yield
        if own_scheduler and state.pool is not None:
            await _close(state.pool, errors)
        if errors:
            raise ExceptionGroup("errors while stopping the service", list(errors))

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        if own_store:
            from ..store.factory import open_store

            store = open_store(settings.database, settings.flags, project_root=state.project_root)
            await store.__aenter__()
            state.store = store
        yield
        if own_store and state.store is not None:
            await _close(state.store, errors)
        state.store = None

    async def limiter_ctx(app: web.Application) -> AsyncIterator[None]:
        from ..ratelimit import TokenBucket

        if own_scheduler:
            state.llm_limiter = TokenBucket(settings.scheduler.max_api_requests_per_minute,
                                            settings.scheduler.api_burst)
        yield
        if own_scheduler and state.llm_limiter is not None:
            await _close(state.llm_limiter, errors)

    async def backend_ctx(app: web.Application) -> AsyncIterator[None]:
        if own_scheduler:
            state.backend = _make_backend(settings, state.pool, state.llm_limiter.acquire,
                                          _workspace_root(settings, state.project_root))
        yield
        if own_scheduler and state.backend is not None:
            await _close(state.backend, errors)

    async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
        if own_scheduler:
            from ..scheduler import Scheduler

            assert state.store is not None  # set up by store_ctx, before this context
            sched = Scheduler(state.store, state.backend, settings.scheduler,
                              agents=settings.agents,
                              workspace_root=_workspace_root(settings, state.project_root),
                              project_root=state.project_root, limiter=state.llm_limiter)
            await sched.__aenter__()
            state.scheduler = sched
        state.drained = asyncio.Event()
        state.phase = Phase.READY
        yield
        state.phase = Phase.STOPPED
        if own_scheduler and state.scheduler is not None:
            await _close(state.scheduler, errors)
        state.scheduler = None

    return [pool_ctx, probe_ctx, store_ctx, limiter_ctx, backend_ctx, scheduler_ctx]


async def _on_shutdown(app: web.Application) -> None:
    """Stop accepting: health answers 503, SSE streams end, new tasks are refused."""
    state = app[STATE]
    state.phase = Phase.DRAINING
    if state.drained is not None:
        state.drained.set()
    end = getattr(state.scheduler, "end_subscriptions", None)
    if end is not None:
        end()  # SSE streams end now, so they do not hold the drain up


def create_app(settings: Settings, *, store: StoreProtocol | None = None,
               scheduler: Any = None) -> web.Application:
    """The aiohttp application for ``settings`` (own components unless handed in)."""
    return _build_app(settings, store, scheduler, pipeline_in_server=False)


def _build_app(settings: Settings, store: StoreProtocol | None, scheduler: Any, *,
               pipeline_in_server: bool) -> web.Application:
    """The application; its request pipeline is an aiohttp middleware, or (for
    :class:`Service`, whose runner calls it around the application's handler) none:
    each middleware layer costs aiohttp a handler-chain lookup and two coroutine
    frames per request (ours and the current-app fix-up it adds)."""
    if scheduler is not None and store is None:
        raise ConfigError("store", None, "must be given when a scheduler is given")
    settings.chat.check_startable()
    root = Path(settings.project_root).resolve()
    codec.use(settings.server.json_encoder)
    state = AppState(settings=settings, project_root=root, store=store, scheduler=scheduler)
    if settings.flags.enable_query_caching:
        from .respcache import EncodedCache

        state.responses = EncodedCache(max_entries=settings.database.cache_max_entries,
                                       gzip_min_bytes=settings.server.gzip_min_bytes)
    state.pipeline = build_pipeline(state)
    middlewares = [] if pipeline_in_server else [web.middleware(state.pipeline)]
    app = web.Application(middlewares=middlewares, client_max_size=settings.server.max_body_bytes)
    app[STATE] = state
    for table in (system_routes, employee_routes, task_routes, file_routes, slack_routes):
        app.router.add_routes(table)
    app.cleanup_ctx.extend(_contexts(state, own_store=store is None,
                                     own_scheduler=scheduler is None))
    app.cleanup_ctx.append(chat_context(state))  # type: ignore[arg-type]
    app.on_shutdown.append(_on_shutdown)
    return app


class Service:
    """The API served on ``settings.server.host:port`` (port 0: an ephemeral port)."""

    def __init__(self, settings: Settings, *, store: StoreProtocol | None = None,
                 scheduler: Any = None, host: str | None = None, port: int | None = None,
                 reuse_port: bool = False) -> None:
        self.settings = settings
        self.host = host or settings.server.host
        self._port = settings.server.port if port is None else port
        self.app = _build_app(settings, store, scheduler, pipeline_in_server=True)
        self._runner: GuardedRunner | None = None
        self._previous_handler: Any = None
        self._reuse_port = reuse_port  # several processes on one port (serve --workers)
        self._closed = False

    @property
    def state(self) -> AppState:
        """The application's state (store, scheduler, metrics ...)."""
        return self.app[STATE]

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked)."""
        if self._runner is None:
            raise RuntimeError("Service.port is known only after start()")
        return int(self._runner.addresses[0][1])

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Start the components and listen."""
        if self._runner is not None:
            raise RuntimeError("Service.start() called twice")
        runner = GuardedRunner(self.app, self.state, access_log=None, handle_signals=False,
                               shutdown_timeout=self.settings.server.shutdown_timeout_s)
        self._runner = runner
        self._install_accept_filter()
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port, backlog=4096, reuse_address=True,
                           reuse_port=self._reuse_port or None)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        server = runner.server
        if self.state.probe is not None and server is not None:
            self.state.probe.connections = lambda: len(server.connections)

    def _install_accept_filter(self) -> None:
        """Rate-limit asyncio's "accept() out of system resource" lines while we run."""
        loop = asyncio.get_running_loop()
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(AcceptErrorFilter(self._previous_handler))

    async def aclose(self) -> None:
        """Drain and stop: in-flight requests finish, the scheduler requeues, store closed."""
        if self._closed or self._runner is None:
            self._closed = True
            return
        self._closed = True
        self.state.phase = Phase.DRAINING
        try:
            await self._runner.cleanup()
        finally:
            asyncio.get_running_loop().set_exception_handler(self._previous_handler)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

