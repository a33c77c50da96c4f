"""PostgreSQL for the lab's process targets: one server per run, a fresh schema per point.

A run whose points need PostgreSQL (``[target] database = "postgresql"``, in the spec,
a sweep or a variant) starts ONE throwaway cluster (:class:`~orchestra_kit.store.pgserver.PgServer`,
~1 s) for all of them, or uses ``target.database_url``. Each (point, repeat) gets its
own schema in it (``?search_path=lab_p3_r0_…``: the service creates and migrates it),
so no point sees another's rows; the schema is dropped when the point ends.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["drop_point_schema", "point_database_url", "redact_url", "run_database"]

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def run_database(url: str, *, needed: bool) -> AsyncIterator[str]:
    """The run's PostgreSQL URL: ``url`` when given, else a throwaway cluster started
    now and removed at the end; "" when no point needs one."""
    if not needed:
        yield ""
        return
    if url:
        yield url
        return
    from ..store.pgserver import PgServer

    async with PgServer() as pg:
        yield pg.url


def point_database_url(base: str, point: int, repeat: int) -> str:
    """``base`` with ``search_path`` set to a fresh schema for this (point, repeat)."""
    schema = f"lab_p{point}_r{repeat}_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(base)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "search_path"]
    query.append(("search_path", schema))
    return urlunsplit(parts._replace(query=urlencode(query)))


def redact_url(url: str) -> str:
    """``url`` without its password (for manifests and logs)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _split_schema(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    schema = next((v for k, v in query if k == "search_path"), "")
    rest = [(k, v) for k, v in query if k != "search_path"]
    return urlunsplit(parts._replace(query=urlencode(rest))), schema


async def drop_point_schema(url: str, timeout_s: float = 10.0) -> None:
    """Drop the schema a :func:`point_database_url` named (a failure is logged, not raised:
    the point's figures are already taken)."""
    import asyncpg

    base, schema = _split_schema(url)
    if not schema.startswith("lab_p"):
        return
    try:
        conn = await asyncpg.connect(base, timeout=timeout_s)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE', timeout=timeout_s)
        finally:
            await conn.close()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        log.warning("could not drop the point's schema %s: %s", schema, e)
