"""Service endpoints: /health, /performance, /metrics, /status, /openapi.json, /docs."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from aiohttp import web

from .docs_page import DOCS_HTML
from .http import json_response
from .openapi import openapi_document
from .state import STATE, AppState, Phase

__all__ = ["routes"]

routes = web.RouteTableDef()

STATUS_LIST_LIMIT = 1000


async def _maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _counts(state: AppState) -> dict[str, Any]:
    return dict(await _maybe(state.store.counts())) if state.store is not None else {}


async def _store_stats(state: AppState) -> dict[str, Any]:
    return dict(await _maybe(state.store.stats())) if state.store is not None else {}


def _scheduler_stats(state: AppState) -> dict[str, Any]:
    return dict(state.scheduler.stats()) if state.scheduler is not None else {}


def _limiter_stats(state: AppState) -> dict[str, Any]:
    lim = state.llm_limiter
    if lim is None:
        return {}
    return {"rate_per_minute": lim.rate_per_minute, "burst": lim.burst,
            "tokens": round(lim.tokens, 3), "waiting": lim.waiting}


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """Liveness and readiness: 200 when ready, 503 while starting or draining."""
    state = request.app[STATE]
    ready = state.phase is Phase.READY
    counts = await state.store.counts() if ready and state.store is not None else {}
    sched = state.scheduler
    running = getattr(sched, "running_count", None)  # a Scheduler; else stats(), or none
    if running is None:
        running = sched.stats().get("running", 0) if sched is not None else 0
    m = state.metrics
    total = m.answered
    by_class = m.answered_by_class
    errors = by_class[4] + by_class[5]
    body = {
        "status": "healthy" if ready else str(state.phase),
        "uptime_seconds": round(m.uptime_s(), 3),
        "counts": counts,
        "chat_enabled": state.chat is not None,
        "active_sessions": running,
        "total_agents": counts.get("employees", 0),
        "performance_metrics": {
            "requests_total": total, "requests_success": by_class[2],
            "requests_error": errors, "error_rate": errors / total if total else 0.0,
            "avg_response_time_ms": m.answered_s / total * 1000.0 if total else 0.0,
            "active_tasks": running,
        },
    }
    return json_response(body, status=200 if ready else 503)


def _database_metrics(counts: dict[str, Any], stats: dict[str, Any],
                      flags: dict[str, Any]) -> dict[str, Any]:
    """The seed's nested ``database_metrics`` document from real store numbers."""
    return {
        "database_metrics": {
            "employee_count": counts.get("employees", 0),
            "locked_files_count": counts.get("active_leases", 0),
            "pending_requests_count": counts.get("pending_requests", 0),
        },
        "performance_metrics": {
            "connection_pool_active": stats.get("pool_in_use", 0),
            "connection_pool_max": stats.get("pool_size", 0),
            "cache_size": stats.get("cache_size", stats.get("cache_entries", 0)),
            "cache_hit_ratio": stats.get("cache_hit_ratio", stats.get("hit_ratio", 0.0)),
            "batch_queue_size": stats.get("queue_depth", 0),
            "batch_size_limit": stats.get("batch_size_limit", stats.get("batch_size", 0)),
        },
        "optimization_status": flags,
        "counts": counts,
        "store": stats,
    }


@routes.get("/performance")
async def performance(request: web.Request) -> web.Response:
    """The seed's metrics document with measured numbers (percentiles, not raw lists)."""
    state = request.app[STATE]
    flags = dataclasses.asdict(state.settings.flags)
    sched = _scheduler_stats(state)
    session = {
        "active_sessions": sched.get("running", 0),
        "queued_tasks": sched.get("queued", 0),
        "processing_tasks": sched.get("running", 0),
        "max_concurrent_sessions": sched.get("max_concurrent",
                                             state.settings.scheduler.max_concurrent_tasks),
        "rate_limiter": _limiter_stats(state),
        "scheduler": sched,
        "agent_usage": state.scheduler.agent_usage() if state.scheduler is not None else {},
    }
    doc = state.metrics.performance_document(
        database=_database_metrics(await _counts(state), await _store_stats(state), flags),
        optimization=flags, session=session, active_tasks=sched.get("running", 0))
    resources = _resources(state)
    doc["resource_metrics"] = resources
    doc["cpu_usage"] = resources.get("cpu_percent", 0.0)  # the seed's names
    doc["memory_usage_mb"] = resources.get("rss_mb", 0.0)
    doc["chat"] = state.chat.stats() if state.chat is not None else {"enabled": False}
    return json_response(doc)


def _resources(state: AppState) -> dict[str, Any]:
    """Process CPU %, RSS, open connections, loop lag, the store writer's queue depth."""
    out: dict[str, Any] = state.probe.snapshot() if state.probe is not None else {}
    depth = getattr(state.store, "writer_queue_depth", None)
    out["store_writer_queue_depth"] = depth if depth is not None else 0
    return out


def _numeric(prefix: str, stats: dict[str, Any]) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in stats.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format (a private registry; gauges pulled now)."""
    state = request.app[STATE]
    gauges = {**_numeric("process", _resources(state)),
              **_numeric("store", await _store_stats(state)),
              **_numeric("store_count", await _counts(state)),
              **_numeric("scheduler", _scheduler_stats(state)),
              **_numeric("llm_limiter", _limiter_stats(state)),
              **_numeric("server", state.connection_stats() if state.connection_stats else {})}
    text = state.metrics.prometheus_text(gauges)
    return web.Response(body=text, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


@routes.get("/status")
async def status(request: web.Request) -> web.Response:
    """The original's summary: sessions, locked files, employees, pending requests."""
    state = request.app[STATE]
    store = state.require_store()
    running = await store.list_tasks(status="running", limit=STATUS_LIST_LIMIT)
    leases = await store.list_leases()
    employees = await store.list_employees(limit=STATUS_LIST_LIMIT)
    pending = await store.list_requests(status="pending")
    m = state.metrics.counters()
    sched = _scheduler_stats(state)
    return json_response({
        "active_sessions": {t.employee: {"task_id": t.id, "status": str(t.status),
                                         "progress": t.progress, "description": t.description}
                            for t in running},
        "locked_files": [lease.to_dict() for lease in leases[:STATUS_LIST_LIMIT]],
        "employees": [e.to_dict() for e in employees],
        "pending_requests": [r.to_dict() for r in pending[:STATUS_LIST_LIMIT]],
        "chat_enabled": state.chat is not None,
        "chat_statistics": state.chat.stats() if state.chat is not None else {},
        "performance_metrics": m,
        "session_metrics": sched,
    })


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this API."""
    return json_response(openapi_document())


@routes.get("/docs")
async def docs(request: web.Request) -> web.Response:
    """A self-contained page rendering /openapi.json (no CDN)."""
    return web.Response(text=DOCS_HTML, content_type="text/html")
