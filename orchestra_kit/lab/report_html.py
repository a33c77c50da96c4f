"""A run's report as one self-contained HTML file (and a comparison's verdict table).

``write_html_report(run_dir)`` writes ``RUN_DIR/report.html``: the run's facts, its
spec, the settings that differ from the defaults, the summary table, every chart as
inline SVG, the self-audit's findings and the generated reading. The page has no
script, no stylesheet link, no font or image fetched from anywhere: it opens offline,
from a mail attachment or a CI artifact. ``write_compare_html(base, new, comparisons)``
writes the comparison's verdicts and per-load table the same way.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Settings
from .analysis import audit
from .comparison import unit_of
from .explain import priority_summary, priority_words
from .selfaudit import capacity_of

if TYPE_CHECKING:
    import pandas as pd

    from .comparison import Comparison
    from .report import Report

__all__ = ["ReportLink", "compare_html", "compare_report", "html_report", "report_html", "settings_changed", "write_compare_html",
           "write_html_report"]

REPORT_FILE = "report.html"
COMPARE_FILE = "compare.html"

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;
max-width:1100px;padding:0 16px;color:#222;line-height:1.45}
h1{font-size:1.5em;margin-bottom:0}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:0.9em;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:0.85em}
figure{margin:16px 0}figure svg{max-width:100%;height:auto}figcaption{color:#555}
.meta td{text-align:left}.ok{color:#2ca02c}.bad{color:#d62728}
.regression{background:#fde0e0}.improvement{background:#e0f5e0}nav a{margin-right:12px}
"""


def _page(title: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """A whole HTML page: title, a nav of the sections, then each (id, heading, body)."""
    nav = "".join(f"<a href='#{sid}'>{html.escape(head)}</a>" for sid, head, _ in sections)
    body = "".join(f"<section id='{sid}'><h2>{html.escape(head)}</h2>{content}</section>"
                   for sid, head, content in sections)
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><nav>{nav}</nav>{body}</body></html>")


def _kv_table(rows: Iterable[tuple[str, Any]], cls: str = "meta") -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                    for k, v in rows)
    return f"<table class='{cls}'>{cells}</table>"


def _frame(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p><i>No rows.</i></p>"
    table = df.to_html(index=False, na_rep="—", border=0, classes="data")
    return f"<div style='overflow-x:auto'>{table}</div>"


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def settings_changed(manifest: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, value, default) for each setting of the run that differs from the defaults."""
    defaults = Settings().flat()
    used = _flatten(manifest.get("settings") or {})
    return [(k, v, defaults[k]) for k, v in sorted(used.items())
            if k in defaults and defaults[k] != v]


_ID = re.compile(r'\bid="([^"]+)"')
_REF = re.compile(r'(href="#|url\(#)([^")]+)')


def inline_svg(text: str, prefix: str) -> str:
    """An SVG file's text ready to sit inside HTML: no XML prolog, ids made unique."""
    start = text.find("<svg")
    svg = text[start:] if start >= 0 else text
    svg = _ID.sub(lambda m: f'id="{prefix}-{m.group(1)}"', svg)
    return _REF.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", svg)


def _charts(paths: Sequence[Path]) -> str:
    svgs = [p for p in paths if p.suffix == ".svg" and p.is_file()]
    if not svgs:
        return "<p><i>No charts (the run has no points, or charts were skipped).</i></p>"
    parts = []
    for i, path in enumerate(svgs):
        svg = inline_svg(path.read_text(encoding="utf-8"), f"c{i}")
        parts.append(f"<figure class='chart' data-chart='{html.escape(path.stem)}'>{svg}"
                     f"<figcaption>{html.escape(path.stem)}</figcaption></figure>")
    return "".join(parts)


def _audit_findings(points: pd.DataFrame, manifest: Mapping[str, Any]) -> str:
    if points.empty:
        return "<p><i>No points to audit.</i></p>"
    audited = audit(points, capacity=capacity_of(dict(manifest)))
    bad = audited[~audited["audit_ok"].astype(bool)]
    if bad.empty:
        return "<p class='ok'>Every point passed the self-audit (schedule lag, dropped " \
               "arrivals, Little's law, sample sizes).</p>"
    cols = [c for c in ("point", "repeat", "load", "audit_reason") if c in bad.columns]
    return (f"<p class='bad'>{len(bad)} of {len(audited)} point(s) flagged: their numbers may "
            f"describe the load generator rather than the service.</p>{_frame(bad[cols])}")


def _by_priority(report: Report) -> list[tuple[str, str, str]]:
    """The latency-by-priority section, when the run's tasks had priorities: one row per
    priority (the highest load's figures; p99 at the other loads as columns when few)."""
    table = getattr(report, "by_priority", None)
    compact = priority_summary(table)
    if table is None or compact is None:
        return []
    top = f"{table['load'].max():g}"
    names = {"n": "requests", "p50_ms": "p50 (ms)", "p90_ms": "p90 (ms)",
             "p99_ms": "p99 (ms)", "max_ms": "max (ms)"}
    names.update({c: f"p99 at load {c.split('@')[1]} (ms)" for c in compact.columns
                  if c.startswith("p99_ms@")})
    intro = (f"<p>Corrected latency of the ok requests at load {html.escape(top)} (the "
             "highest), one row per task priority, highest first.</p>")
    words = priority_words(table)
    tail = f"<p class='reading'>{html.escape(words)}</p>" if words else ""
    return [("priority", "Latency by task priority",
             intro + _frame(compact.rename(columns=names)) + tail)]


def _facts(manifest: Mapping[str, Any]) -> str:
    machine = manifest.get("machine") or {}
    return _kv_table([
        ("experiment", manifest.get("name", "?")), ("run", manifest.get("run_id", "?")),
        ("status", manifest.get("status", "?")), ("target", manifest.get("target_kind", "?")), ("started", manifest.get("started")),
        ("finished", manifest.get("finished")), ("git sha", manifest.get("git_sha")),
        ("python", manifest.get("python")), ("machine", machine.get("platform")),
        ("cpus", machine.get("cpu_count")), ("seed", manifest.get("seed")),
    ])  # fmt: skip


def report_html(report: Report) -> str:
    """The whole report page of a :class:`~orchestra_kit.lab.report.Report`."""
    m = report.run.manifest
    changed = settings_changed(m)
    changed_html = (_kv_table(((k, f"{v!r} (default {d!r})") for k, v, d in changed))
                    if changed else "<p>All settings at their defaults.</p>")
    spec = html.escape(json.dumps(m.get("spec", {}), indent=2, sort_keys=True, default=str))
    sections = [
        ("run", "Run", _facts(m)),
        ("reading", "Reading", f"<p class='reading'>{html.escape(report.reading)}</p>"),
        ("summary", "Summary", _frame(report.table)),
        *_by_priority(report),
        ("charts", "Charts", _charts(report.charts)),
        ("audit", "Self-audit", _audit_findings(report.run.points, m)),
        ("settings", "Settings that differ from the defaults", changed_html),
        ("spec", "Spec", f"<pre>{spec}</pre>"),
    ]
    return _page(f"{m.get('name', '?')} — run {m.get('run_id', '?')}", sections)


def write_html_report(run_dir: str | Path, *, report: Report | None = None) -> Path:
    """Write ``RUN_DIR/report.html`` from ``report`` (default: build it, charts drawn)."""
    from .report import build_report

    if report is None:
        report = build_report(run_dir, charts=True)
    path = Path(run_dir) / REPORT_FILE
    path.write_text(report_html(report), encoding="utf-8")
    return path


def html_report(run_dir: str | Path) -> ReportLink:
    """Write ``RUN_DIR/report.html`` and return a link a notebook shows."""
    return ReportLink(write_html_report(run_dir))


def _verdict_rows(comparison: Comparison) -> str:
    rows = comparison.rows
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in rows.columns)
    body = []
    for _, row in rows.iterrows():
        cls = str(row.get("outcome", ""))
        cells = "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row.to_numpy())
        body.append(f"<tr class='{html.escape(cls)}'>{cells}</tr>")
    return f"<table class='verdict'><tr>{head}</tr>{''.join(body)}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:,.4g}"
    return str(value)


def compare_html(base_dir: str | Path, new_dir: str | Path,
                 comparisons: Sequence[Comparison]) -> str:
    """The comparison page: one verdict and per-load table per metric."""
    regressed = any(c.is_regression for c in comparisons)
    summary = ("<p class='bad'><b>Significant regression.</b></p>" if regressed
               else "<p class='ok'><b>No significant regression.</b></p>")
    verdicts = "".join(f"<li><b>{html.escape(c.metric)}</b>: {html.escape(c.verdict)}</li>"
                       for c in comparisons)
    sections = [("verdict", "Verdict", f"{summary}<ul>{verdicts}</ul>"),
                ("runs", "Runs", _kv_table([("base", base_dir), ("new", new_dir)]))]
    for c in comparisons:
        floor = (f", moves the median by more than {c.min_abs:g}{unit_of(c.metric)}"
                 if c.min_abs else "")
        rule = (f"<p>A change counts when it exceeds {c.threshold:.0%}{floor} and is "
                f"significant at α = {c.alpha:g} "
                f"({'higher' if c.higher_is_better else 'lower'} is better).</p>")
        sections.append((f"metric-{c.metric}", c.metric, rule + _verdict_rows(c)))
    return _page(f"Comparison: {Path(new_dir).name} vs {Path(base_dir).name}", sections)


def write_compare_html(base_dir: str | Path, new_dir: str | Path,
                       comparisons: Sequence[Comparison], path: str | Path | None = None) -> Path:
    """Write the comparison page (default ``NEW/compare.html``); its path."""
    out = Path(path) if path else Path(new_dir) / COMPARE_FILE
    out.write_text(compare_html(base_dir, new_dir, comparisons), encoding="utf-8")
    return out


def compare_report(base_dir: str | Path, new_dir: str | Path,
                   comparisons: Sequence[Comparison]) -> ReportLink:
    """Write ``NEW/compare.html`` and return a link a notebook shows."""
    return ReportLink(write_compare_html(base_dir, new_dir, comparisons))


@dataclass(frozen=True)
class ReportLink:
    """A report file shown in a notebook as a link (relative to the notebook) and its path."""

    path: Path

    def _repr_html_(self) -> str:
        href = html.escape(Path(self.path).as_posix())
        full = html.escape(str(Path(self.path).resolve()))
        return (f"<a href='{href}' target='_blank'>Open the report ({html.escape(self.path.name)})"
                f"</a> — one self-contained file, opens offline: <code>{full}</code>")

    def __repr__(self) -> str:
        return f"report: {Path(self.path).resolve()}"
