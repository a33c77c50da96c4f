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
