"""Fixtures shared by every test folder: one throwaway PostgreSQL server per session, and
the lab generator's calibration measured once per session.

``make test`` runs the suite on several pytest-xdist workers (``-n``): each worker is a
session of its own, so these fixtures run once per worker. Each must be safe to run in two
workers at once: the PostgreSQL server takes a free port and a private folder; the
calibration is measured by one process under a file lock (``cached_capacity``) and read
by the others."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from orchestra_kit.store.pgserver import PgServer

ROOT = Path(__file__).resolve().parents[1]

# Under pytest-xdist (``make test`` runs ``-n N --dist loadgroup``): the tests under each
# of these folders run on one worker, in order, since they share an expensive module
# fixture (the browser suite's JupyterLab and Chromium). (xdist's own ``xdist_group``
# mark does nothing under pytest 9: xdist 3.8 renames ``item._nodeid``, which pytest 9
# no longer reads; so the groups are named by folder here, where the controller sees
# them.)
ONE_WORKER = ("tests/browser/",)
# Started first, so that the long ones do not finish last on one worker while the
# others idle: the browser suite, then the notebooks.
FIRST = ("tests/browser/", "notebooks/")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` with :data:`ONE_WORKER`'s folders as the groups."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FolderGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return next((f for f in ONE_WORKER if nodeid.startswith(f)), nodeid)

    return FolderGroups(config, log)


# Notebooks whose checks read timings, marked ``alone`` like the tests marked in their
# files (``make test`` runs them after the parallel workers): 05's regression gate
# compares p99 and throughput with the committed baseline.
ALONE_NOTEBOOKS = ("05-regression.ipynb",)


@pytest.hookimpl(tryfirst=True)  # before -m deselects by mark
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """:data:`ALONE_NOTEBOOKS` marked ``alone``; under xdist, :data:`FIRST`'s folders
    first (every worker sorts alike; a plain run keeps pytest's order)."""
    for item in items:
        if item.path.suffix == ".ipynb" and item.path.name in ALONE_NOTEBOOKS:
            item.add_marker(pytest.mark.alone)
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    rank = {nodeid: next((i for i, f in enumerate(FIRST) if nodeid.startswith(f)), len(FIRST))
            for nodeid in (item.nodeid for item in items)}
    items.sort(key=lambda item: rank[item.nodeid])


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
    the checkout's ``results/`` (where the notebooks find it too)."""
    from orchestra_kit.lab.calibrate import cached_capacity

    # One xdist worker measures; the others (and notebooks) wait, then read its cache.
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
