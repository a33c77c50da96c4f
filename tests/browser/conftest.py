"""Fixtures of the browser suite: one JupyterLab and one Chromium per test module.

nbmake does not run again the notebooks these tests run all the way (01, 02, 03), when
the suite can run. Module scope on purpose: Playwright's sync API keeps its event loop running while it is
open, so it must be closed before the asyncio tests of other modules run.

The suite needs Debian's Chromium (``make setup`` installs it when missing) and the
``playwright`` Python package (the dev extra). Without them it fails under CI and is
skipped elsewhere, saying why. Screenshots of failed tests go to
``results/browser-artifacts/`` (git-ignored; ``BROWSER_ARTIFACTS`` moves it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labdriver import (
    CHROMIUM_ARGS,
    ROOT,
    Lab,
    chromium_path,
    lay_out_root,
    running_lab,
    shutdown_kernels,
)

ARTIFACTS = Path(os.environ.get("BROWSER_ARTIFACTS",
                                ROOT / "results" / "browser-artifacts"))


def _missing() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -e '.[dev]')"
    if chromium_path() is None:
        return "Chromium is missing (make setup installs Debian's chromium)"
    return ""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (never a downloaded browser)."""
    why = _missing()
    if why:
        pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


# The notebook each test runs all the way in JupyterLab (Run All, then no error output
# and more checks): nbmake need not run those again in the same session.
NOTEBOOK_OF = {"test_01_quickstart_runs_all": "01-quickstart.ipynb",
               "test_02_sweep_charts_and_its_offline_html_report": "02-concurrency-sweep.ipynb",
               "test_03_panel_runs_stops_and_reports_errors": "03-tuning-panel.ipynb"}


@pytest.hookimpl(trylast=True)  # after -k / -m deselected what they deselect
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect nbmake's run of a notebook that a selected browser test runs (only when the
    browser suite can run: without Chromium it skips, and nbmake keeps every notebook)."""
    chosen = {NOTEBOOK_OF[i.name] for i in items
              if i.nodeid.startswith("tests/browser/") and i.name in NOTEBOOK_OF}
    if not chosen or _missing():
        return
    twice = [i for i in items if i.path.suffix == ".ipynb" and i.path.name in chosen]
    if twice:
        config.hook.pytest_deselected(items=twice)
        items[:] = [i for i in items if i not in twice]


@pytest.fixture(scope="module")
def lab(browser: Any, tmp_path_factory: pytest.TempPathFactory,
        generator_calibration: dict[str, Any]) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1 serving a temporary copy of notebooks/ and experiments/
    (and the session's generator calibration, so the notebooks' runs need not measure it)."""
    from orchestra_kit.lab.calibrate import CACHE_NAME, store_capacity

    root = tmp_path_factory.mktemp("lab")
    lay_out_root(root)
    store_capacity(root / "results" / CACHE_NAME, generator_calibration)
    with running_lab(root) as running:
        yield running


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="module")
def lab_tab(browser: Any, lab: Lab) -> Iterator[Any]:
    """One tab for the module: JupyterLab loads once, notebooks open from its file browser."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    yield context.new_page()
    context.close()


@pytest.fixture
def page(lab_tab: Any, lab: Lab, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The JupyterLab tab; a screenshot is kept when the test fails; kernels shut down after."""
    lab_tab.set_default_timeout(30_000)
    yield lab_tab
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        lab_tab.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"))
    shutdown_kernels(lab)


@pytest.fixture
def screenshots() -> Path | None:
    """Where to keep screenshots a person reads (``BROWSER_SCREENSHOTS``), if anywhere."""
    where = os.environ.get("BROWSER_SCREENSHOTS")
    if not where:
        return None
    Path(where).mkdir(parents=True, exist_ok=True)
    return Path(where)
