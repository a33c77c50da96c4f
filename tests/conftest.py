"""Fixtures shared by every test folder: one throwaway PostgreSQL server per session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from orchestra_kit.store.pgserver import PgServer


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL cluster for the whole session (initdb + start ≈ 1-5 s here)."""
    with PgServer() as pg:
        yield pg


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A URL whose ``search_path`` is a fresh schema (PgStore creates it): tests start empty."""
    return f"{pg_server.url}?search_path=t_{uuid.uuid4().hex[:12]}"
