"""What a user sees in JupyterLab and in the HTML report, checked in a real Chromium.

nbmake runs notebooks in a kernel with no front end; these tests open them in
JupyterLab, press Run All from the menu and click the tuning panel's buttons, so they
catch what only a front end shows (output dropped from background tasks, widgets that
never redraw, cut-off labels, a report that fetches something).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from labdriver import CURRENT, Lab, cell_errors, open_notebook, rendered_images, run_all

pytestmark = pytest.mark.timeout(300)

PANEL = ".orchestra-panel"
RUN_ROWS = ".orchestra-runs tr[data-status='{}']"


def test_01_quickstart_runs_all(page: Any, lab: Lab) -> None:
    open_notebook(page, lab, "01-quickstart.ipynb")
    run_all(page)
    assert cell_errors(page) == []
    last = page.locator(f"{CURRENT} .jp-CodeCell .jp-OutputArea-output").last.inner_text()
    assert "8 of 8 tasks completed" in last
    assert page.locator(f"{CURRENT} .jp-OutputArea-output .widget-hprogress").count() >= 1


def test_02_sweep_charts_and_its_offline_html_report(page: Any, lab: Lab,
                                                     screenshots: Path | None) -> None:
    open_notebook(page, lab, "02-concurrency-sweep.ipynb")
    run_all(page)
    assert cell_errors(page) == []
    assert rendered_images(page) >= 3  # latency, success, throughput
    link = page.locator(f"{CURRENT} .jp-OutputArea-output a[href*='report.html']")
    assert link.count() == 1
    reports = sorted(lab.root.glob("results/concurrency_sweep/*/report.html"))
    assert len(reports) == 1
    _check_report_offline(page.context.new_page(), reports[0], screenshots)


def _check_report_offline(tab: Any, report: Path, screenshots: Path | None) -> None:
    """Open report.html from file://, refusing (and counting) every other request."""
    asked: list[str] = []

    def refuse_others(route: Any) -> None:
        asked.append(route.request.url)
        route.continue_() if route.request.url.startswith("file://") else route.abort()

    tab.route("**/*", refuse_others)
    tab.goto(report.as_uri())
    assert asked == [report.as_uri()]  # the page alone: no script, font, image or style fetched
    charts = tab.locator("figure.chart svg")
    assert charts.count() >= 3
    for i in range(charts.count()):
        box = charts.nth(i).bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 150
    text = tab.inner_text("body")
    for heading in ("Reading", "Summary", "Charts", "Self-audit",
                    "Settings that differ from the defaults", "Spec"):
        assert heading in text
    if screenshots is not None:
        tab.screenshot(path=str(screenshots / "html-report-offline.png"), full_page=True)
    tab.close()


def _click_run(page: Any, levels: str, *, duration_s: str | None = None) -> None:
    page.fill(f"{PANEL} .orchestra-levels input", levels)
    if duration_s is not None:
        page.fill(f"{PANEL} .orchestra-duration input", duration_s)
        page.press(f"{PANEL} .orchestra-duration input", "Tab")  # FloatText syncs on change
    page.click(f"{PANEL} .orchestra-run")


def _wait_rows(page: Any, status: str, count: int, timeout_ms: float = 90_000) -> None:
    page.wait_for_function(
        "([sel, n]) => document.querySelectorAll(sel).length >= n",
        arg=[RUN_ROWS.format(status), count], timeout=timeout_ms)


def test_03_panel_runs_stops_and_reports_errors(page: Any, lab: Lab,
                                                screenshots: Path | None) -> None:
    open_notebook(page, lab, "03-tuning-panel.ipynb")
    run_all(page)
    assert cell_errors(page) == []
    panel = page.locator(PANEL)
    assert panel.count() == 1
    _wait_rows(page, "complete", 1)  # the headless run of RUN_HEADLESS = True
    _check_labels(page)
    chart = page.locator(f"{PANEL} img.orchestra-chart")
    before = chart.screenshot()

    _click_run(page, "1, 2")  # a clicked run: visible running state, then chart and table
    page.wait_for_selector(f"{PANEL} .orchestra-status :text('Running')", timeout=15_000)
    assert page.locator(f"{PANEL} .orchestra-stop").is_enabled()
    _wait_rows(page, "complete", 2)
    page.wait_for_function("sel => !document.querySelector(sel).disabled",
                           arg=f"{PANEL} .orchestra-run")
    after = chart.screenshot()
    assert after != before, "the chart did not redraw after a clicked run"

    page.fill(f"{PANEL} .orchestra-knob-agents-sim_latency_ms input", "20")
    page.press(f"{PANEL} .orchestra-knob-agents-sim_latency_ms input", "Tab")
    _click_run(page, "1, 4")
    _wait_rows(page, "complete", 3)
    page.wait_for_function("sel => !document.querySelector(sel).disabled",
                           arg=f"{PANEL} .orchestra-run")
    assert chart.screenshot() != after
    _check_runs_table(page, lab)
    if screenshots is not None:
        _shoot(page, panel, screenshots / "panel-after-two-clicked-runs.png")

    _click_run(page, "2.5")  # a bad level names the rule; the progress bar is reset
    page.wait_for_selector(f"{PANEL} .orchestra-status :text('whole numbers')")
    width = page.locator(f"{PANEL} .orchestra-progress .progress-bar").evaluate(
        "e => e.style.width")
    assert width in ("0%", "0px", "")

    _click_run(page, "1, 2, 4", duration_s="1.5")  # Stop after the first point
    page.wait_for_selector(f"{PANEL} .orchestra-status :text('1 of 3')", timeout=60_000)
    page.click(f"{PANEL} .orchestra-stop")
    _wait_rows(page, "stopped", 1, timeout_ms=60_000)
    assert "Stopped" in page.inner_text(f"{PANEL} .orchestra-status")
    # Each button's state reaches the page in its own message: wait until both
    # have settled (Stop greyed out, Run back) rather than read them at one instant.
    page.wait_for_function(
        "([stop, run]) => document.querySelector(stop).disabled"
        " && !document.querySelector(run).disabled",
        arg=[f"{PANEL} .orchestra-stop", f"{PANEL} .orchestra-run"], timeout=10_000)
    if screenshots is not None:
        _shoot(page, panel, screenshots / "panel-after-stop.png")


def _shoot(page: Any, element: Any, path: Path) -> None:
    """A screenshot of the whole element (a tall viewport, so nothing is scrolled away)."""
    page.set_viewport_size({"width": 1400, "height": 2400})
    element.scroll_into_view_if_needed()
    element.screenshot(path=str(path))
    page.set_viewport_size({"width": 1400, "height": 1000})


def _check_runs_table(page: Any, lab: Lab) -> None:
    """The runs table fits the panel (no column cut off or scrolled out of sight) and each
    run's short id shows its whole folder on hover."""
    overflow = page.evaluate(
        """sel => { const t = document.querySelector(sel + ' .orchestra-runs-table');
                    const box = document.querySelector(sel + ' .orchestra-runs-scroll');
                    return [t.getBoundingClientRect().right - box.getBoundingClientRect().right,
                            box.scrollWidth - box.clientWidth]; }""", PANEL)
    assert max(overflow) <= 1, f"the runs table overflows by {overflow} px"
    ids = page.locator(f"{PANEL} .orchestra-runs-table code[title]")
    assert ids.count() == 3
    folder = Path(ids.last.get_attribute("title"))
    assert folder.is_absolute() and folder.parent == lab.root.resolve() / "results" / "tuning"
    assert ids.last.inner_text().split()[1] in folder.name  # the short id names the folder


def _check_labels(page: Any) -> None:
    """Every knob label fits (none cut off) and names its setting key in its tooltip."""
    cut = page.evaluate(
        """sel => [...document.querySelectorAll(sel + ' .widget-label')]
                  .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent)""",
        PANEL)
    assert cut == []
    assert page.locator(f"{PANEL} [title^='database.batch_size — default 100']").count() >= 1
