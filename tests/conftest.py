"""Fixtures shared by every test folder: one throwaway PostgreSQL server per session, and
the lab generator's calibration measured once per session."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from orchestra_kit.store.pgserver import PgServer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL cluster for the whole session (initdb + start ≈ 1-5 s here)."""
    with PgServer() as pg:
        yield pg


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A URL whose ``search_path`` is a fresh schema (PgStore creates it): tests start empty."""
    return f"{pg_server.url}?search_path=t_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def generator_calibration() -> dict[str, Any]:
    """The generator's quick calibration (5-10 s), measured once per session and cached in
    the checkout's ``results/`` (where the notebooks, run later, find it too)."""
    from orchestra_kit.lab.calibrate import cached_capacity

    with ThreadPoolExecutor(1) as pool:  # its own loop, away from the tests' loops
        result = pool.submit(asyncio.run, cached_capacity(ROOT / "results")).result()
    assert result is not None
    return result


@pytest.fixture
def calibrated_results(tmp_path: Path, generator_calibration: dict[str, Any]) -> Path:
    """A fresh results root holding the session's calibration: a run started there
    records it instead of measuring the generator again (as a second run in ``results/``)."""
    from orchestra_kit.lab.calibrate import CACHE_NAME, store_capacity

    store_capacity(tmp_path / "results" / CACHE_NAME, generator_calibration)
    return tmp_path / "results"
