"""``orchestra run | report | compare`` — the lab from a terminal."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tomllib
from pathlib import Path
from typing import Any

from ..errors import ConfigError, OrchestraError, ValidationError

__all__ = ["compare_main", "parse_set", "report_main", "run_main"]


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["load.users=4", "sweep.load.users=[1,2]"]`` → dict; values parsed as TOML."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--set", item, "must look like key=value")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word is a string
        out[key.strip()] = value
    return out


def _print_report(run_dir: Path, *, charts: bool = True, html: bool = False) -> None:
    from .report import build_report

    report = build_report(run_dir, charts=charts)
    print(report.text())
    if html:
        from .report_html import write_html_report

        print(f"\nreport: {write_html_report(run_dir, report=report)}")


def _spec_kind(path: str) -> str:
    try:
        kind = tomllib.loads(Path(path).read_text(encoding="utf-8")).get("kind", "sweep")
    except (OSError, tomllib.TOMLDecodeError):
        return "sweep"  # load_spec reports the problem
    return str(kind)


def _soak(args: argparse.Namespace) -> int:
    """``orchestra run SOAK.toml``: the soak with faults (lab/soak.py); exit 1 when an
    acknowledged write was lost or a task is stuck."""
    from .soak import run_soak
    from .soak_report import soak_text
    from .soak_spec import load_soak_spec

    try:
        spec = load_soak_spec(args.spec, parse_set(args.set))
        run_dir = asyncio.run(run_soak(spec, results_root=args.results))
    except OrchestraError as e:
        print(f"orchestra run: {e}", file=sys.stderr)
        return 2
    summary = json.loads((run_dir / "summary.json").read_text())
    print(soak_text(summary, run_dir))
    bad = summary["lost_hires_count"] or summary["lost_tasks_count"] or summary["stuck_tasks"]
    return 1 if bad else 0


def run_main(argv: list[str]) -> int:
    """``orchestra run SPEC.toml [--set key=value ...] [--results DIR] [--no-progress]``."""
    parser = argparse.ArgumentParser(prog="orchestra run", description=run_main.__doc__)
    parser.add_argument("spec", help="experiment spec (experiments/NAME.toml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spec key, e.g. load.duration_s=2 or sweep.load.users=[1,4]")
    parser.add_argument("--results", default="results", help="results root (default: results/)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--no-charts", action="store_true", help="skip the charts")
    parser.add_argument("--no-html", action="store_true",
                        help="do not write RUN_DIR/report.html (written by default)")
    parser.add_argument("--no-calibration", action="store_true",
                        help="do not measure the generator's capacity when no calibration "
                             "is cached (the manifest then records none)")
    args = parser.parse_args(argv)
    from .spec import load_spec
    from .sweep import run_experiment

    if _spec_kind(args.spec) == "soak":
        return _soak(args)
    try:
        spec = load_spec(args.spec, parse_set(args.set))
        where = {"process": "orchestra serve in its own process per point",
                 "inprocess": "the service inside this process (debugging)",
                 "url": spec.target.url}[spec.target.kind]
        print(f"orchestra run: {spec.name}: {len(spec.points())} point(s) × {spec.repeats} "
              f"repeat(s), {spec.load.duration_s:g} s each, against {where}", flush=True)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            run_dir = runner.run(run_experiment(spec, results_root=args.results,
                                                progress=not args.no_progress,
                                                calibration=not args.no_calibration))
        _print_report(run_dir, charts=not args.no_charts, html=not args.no_html)
    except OrchestraError as e:
        print(f"orchestra run: {e}", file=sys.stderr)
        return 2
    _print_failed_points(run_dir)
    print(f"\nresults: {run_dir}")
    return 0


def _loop_factory() -> Any:
    """uvloop for the CLI's generator when installed (a terminal is not a Jupyter kernel)."""
    from .workers import _loop_factory as factory

    return factory()[0]


def _print_failed_points(run_dir: Path) -> None:
    """Name the points that failed (the run itself was carried out: exit code 0)."""
    import json

    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    failed = manifest.get("failed_points") or []
    if not failed:
        return
    print(f"\n{len(failed)} point(s) failed (recorded in points.csv, column point_error):",
          file=sys.stderr)
    for item in failed:
        params = ", ".join(f"{k}={v}" for k, v in item.get("params", {}).items())
        first = str(item.get("error", "")).splitlines()[0] if item.get("error") else ""
        print(f"  point {item['point']} repeat {item['repeat']} ({params}): {first}",
              file=sys.stderr)


def report_main(argv: list[str]) -> int:
    """``orchestra report RUN_DIR [--no-charts] [--html]``: summary table, reading and charts."""
    parser = argparse.ArgumentParser(prog="orchestra report", description=report_main.__doc__)
    parser.add_argument("run_dir")
    parser.add_argument("--no-charts", action="store_true")
    parser.add_argument("--html", action="store_true",
                        help="also write RUN_DIR/report.html (one self-contained file)")
    args = parser.parse_args(argv)
    try:
        _print_report(Path(args.run_dir), charts=not args.no_charts, html=args.html)
    except OrchestraError as e:
        print(f"orchestra report: {e}", file=sys.stderr)
        return 2
    return 0


def _floors(pairs: list[str]) -> dict[str, float]:
    """``--min-abs METRIC=VALUE`` flags as a dict; a clear error for a malformed one."""
    out: dict[str, float] = {}
    for pair in pairs:
        metric, sep, value = pair.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not metric or not math.isfinite(number) or number < 0:
            raise ValidationError("--min-abs", "expected METRIC=VALUE with a number ≥ 0, "
                                  "e.g. p99_ms=5", value=pair)
        out[metric] = number
    return out


def compare_main(argv: list[str]) -> int:
    """``orchestra compare BASE NEW [--metric p99_ms] [--threshold 0.1] [--min-abs p99_ms=5]``:
    exit 1 on regression."""
    parser = argparse.ArgumentParser(prog="orchestra compare", description=compare_main.__doc__)
    parser.add_argument("base")
    parser.add_argument("new")
    parser.add_argument("--metric", action="append", default=[],
                        help="metric column(s) (default: p99_ms and throughput_rps)")
    parser.add_argument("--threshold", type=float, default=0.10,
                        help="smallest relative change that counts (default 0.10)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level")
    parser.add_argument("--min-abs", action="append", default=[], metavar="METRIC=VALUE",
                        help="smallest absolute change of METRIC that counts, in its unit "
                             "(e.g. p99_ms=5: a p99 of 2 ms doubling to 4 ms is noise)")
    parser.add_argument("--html", nargs="?", const="", default=None, metavar="PATH",
                        help="also write the verdict table as HTML (default NEW/compare.html)")
    args = parser.parse_args(argv)
    from .report import compare_runs

    try:
        results = compare_runs(Path(args.base), Path(args.new), metrics=args.metric or None,
                               threshold=args.threshold, alpha=args.alpha,
                               min_abs=_floors(args.min_abs))
    except OrchestraError as e:
        print(f"orchestra compare: {e}", file=sys.stderr)
        return 2
    regressed = False
    for comparison in results:
        print(comparison.verdict)
        regressed |= bool(comparison.is_regression)
    if args.html is not None:
        from .report_html import write_compare_html

        print(f"report: {write_compare_html(args.base, args.new, results, args.html or None)}")
    return 1 if regressed else 0
