"""The self-contained HTML report and comparison page (and the CLI flags that write them)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestra_kit.config import Settings
from orchestra_kit.lab.cli import compare_main, report_main
from orchestra_kit.lab.report import compare_runs
from orchestra_kit.lab.report_html import (
    ReportLink,
    compare_html,
    html_report,
    inline_svg,
    settings_changed,
)

LOADS = (1, 2, 4, 8)


def _write_run(path: Path, *, scale: float = 1.0, few: bool = False, seed: int = 0) -> Path:
    """A run directory as run_experiment leaves it: manifest.json and points.csv."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, load in enumerate(LOADS):
        for rep in range(5):
            x = 100.0 * load / (1 + 0.05 * (load - 1)) / scale * rng.lognormal(0, 0.02)
            mean_ms = load / x * 1000.0
            rows.append({"run_id": path.name, "point": i, "repeat": rep, "load": float(load),
                         "loop": "closed", "concurrency": load, "n": 5 if few else 500,
                         "n_ok": 5 if few else 500,
                         "success_rate": 1.0, "throughput_rps": x, "p50_ms": mean_ms,
                         "p90_ms": 1.5 * mean_ms, "p99_ms": 2.5 * mean_ms,
                         "p999_ms": 3 * mean_ms, "lag_p99_ms": 0.1, "littles_residual": 0.01,
                         "dropped": 0})
    path.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(path / "points.csv", index=False)
    settings = Settings().with_overrides({"database.batch_size": 7}).to_dict()
    manifest = {"name": "demo", "run_id": path.name, "status": "complete", "seed": 3,
                "spec": {"name": "demo", "slo": {"p99_ms": 150.0}}, "settings": settings}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def test_report_html_is_one_self_contained_file(tmp_path: Path) -> None:
    run_dir = _write_run(tmp_path / "demo" / "r1", few=True)
    link = html_report(run_dir)
    assert isinstance(link, ReportLink) and link.path == run_dir / "report.html"
    page = link.path.read_text(encoding="utf-8")
    charts = sorted((run_dir / "charts").glob("*.svg"))
    assert len(charts) >= 3 and page.count("<svg") == len(charts)
    assert "<script" not in page and "<link" not in page and "<img" not in page
    # nothing is fetched: every src/href is a fragment inside the page
    refs = re.findall(r'(?:src|href)=["\']([^"\']*)', page)
    assert refs and all(r.startswith("#") for r in refs), [r for r in refs if r[:1] != "#"]
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # ids made unique across the inlined charts
    for words in ("Settings that differ from the defaults", "database.batch_size",
                  "7 (default 100)", "Self-audit", "too few samples", "Reading", "Summary",
                  "&quot;p99_ms&quot;: 150.0"):
        assert words in page, words


def test_settings_changed_lists_only_differences() -> None:
    manifest = {"settings": Settings().with_overrides({"flags.enable_wal_mode": False}).to_dict()}
    assert settings_changed(manifest) == [("flags.enable_wal_mode", False, True)]
    assert settings_changed({"settings": Settings().to_dict()}) == []


def test_inline_svg_drops_the_prolog_and_prefixes_ids() -> None:
    svg = ('<?xml version="1.0"?>\n<!DOCTYPE svg>\n<svg><defs><path id="m1"/></defs>'
           '<use xlink:href="#m1"/><g clip-path="url(#p2)"/></svg>')
    out = inline_svg(svg, "c0")
    assert out.startswith("<svg") and 'id="c0-m1"' in out
    assert 'href="#c0-m1"' in out and "url(#c0-p2)" in out


def test_compare_page_has_the_verdict_table(tmp_path: Path) -> None:
    base = _write_run(tmp_path / "demo" / "base", seed=1)
    new = _write_run(tmp_path / "demo" / "new", scale=2.0, seed=2)
    results = compare_runs(base, new, threshold=0.1)
    page = compare_html(base, new, results)
    assert "Significant regression" in page
    assert page.count("class='regression'") >= len(LOADS)  # p99 and throughput both worse
    assert "<table class='verdict'>" in page and "p99_ms" in page and "throughput_rps" in page


def test_cli_writes_the_html_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _write_run(tmp_path / "demo" / "base", seed=1)
    new = _write_run(tmp_path / "demo" / "new", seed=2)
    assert report_main([str(new), "--html"]) == 0
    assert (new / "report.html").is_file() and "report.html" in capsys.readouterr().out
    assert compare_main([str(base), str(new), "--html"]) == 0
    page = (new / "compare.html").read_text(encoding="utf-8")
    assert "No significant regression" in page
    out = tmp_path / "cmp.html"
    assert compare_main([str(base), str(new), "--html", str(out)]) == 0 and out.is_file()


def _write_requests(run_dir: Path, loads: tuple[int, ...]) -> None:
    """requests.csv with priorities 0..10: at the highest load, low priorities wait longest."""
    rows = []
    for point, load in enumerate(loads):
        for i in range(220):
            prio = i % 11
            wait = (10 - prio) * 40.0 if load == max(loads) else 0.0
            rows.append({"run_id": run_dir.name, "point": point, "repeat": 0, "op": "assign",
                         "latency_ms": 10.0 + load + wait + i % 7, "ok": True, "priority": prio})
    pd.DataFrame(rows).to_csv(run_dir / "requests.csv", index=False)


def _priority_rows(page: str) -> list[str]:
    section = page.split("<section id='priority'>")[1].split("</section>")[0]
    return re.findall(r"<tr>\s*<td>", section)


def test_report_html_latency_by_priority_is_one_row_per_priority(tmp_path: Path) -> None:
    from orchestra_kit.lab.report import build_report
    from orchestra_kit.lab.report_html import write_html_report

    run_dir = _write_run(tmp_path / "demo" / "r1")
    _write_requests(run_dir, LOADS)
    report = build_report(run_dir, charts=False)
    page = write_html_report(run_dir, report=report).read_text(encoding="utf-8")
    assert len(_priority_rows(page)) == 11  # was one row per (load, priority): 44
    section = page.split("<section id='priority'>")[1].split("</section>")[0]
    for head in ("requests", "p50 (ms)", "p90 (ms)", "p99 (ms)", "max (ms)",
                 "p99 at load 1 (ms)", "p99 at load 4 (ms)"):
        assert f"<th>{head}</th>" in section, head
    assert "p99 at load 8" not in section  # the highest load is the main columns
    # the reading names the low-priority tail, in the section and in the Reading
    assert "priority 0 tasks have median 421 ms" in section
    assert "the tail is low-priority work waiting" in report.reading
    rows = re.findall(r"<tr>\s*<td>(\d+)</td>", section)
    assert rows == [str(p) for p in range(10, -1, -1)]  # highest priority first
    text = report.text()
    assert "corrected latency by task priority" in text
    assert len([ln for ln in text.splitlines() if re.match(r"^\s+\d+\s+20\s", ln)]) == 11


def test_priority_summary_drops_load_columns_when_there_are_many() -> None:
    from orchestra_kit.lab.explain import latency_by_priority, priority_summary

    loads = {p: float(2 ** p) for p in range(7)}
    req = pd.DataFrame([{"point": pt, "latency_ms": 5.0 + prio, "ok": "True", "priority": prio}
                        for pt in loads for prio in (1, 5, 9) for _ in range(3)])
    points = pd.DataFrame({"point": list(loads), "load": list(loads.values())})
    long = latency_by_priority(req, points)
    assert long is not None and len(long) == 21  # 7 loads x 3 priorities
    compact = priority_summary(long)
    assert compact is not None
    assert list(compact["priority"]) == [9, 5, 1]
    assert list(compact.columns) == ["priority", "n", "p50_ms", "p90_ms", "p99_ms", "max_ms"]
    assert list(compact["n"]) == [3, 3, 3] and list(compact["p50_ms"]) == [14.0, 10.0, 6.0]
    few = priority_summary(long, max_load_columns=6)
    assert few is not None and [c for c in few.columns if "@" in c] == [
        f"p99_ms@{v:g}" for v in list(loads.values())[:-1]]
    assert priority_summary(None) is None
