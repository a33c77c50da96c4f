"""The lab: load experiments against the service, results on disk, analysis and charts.

What a notebook needs, by name (each imported on first use)::

    from orchestra_kit.lab import load_spec, run_experiment, load_run, summary_table

    spec = load_spec("experiments/concurrency_sweep.toml", {"repeats": 1})
    run_dir = await run_experiment(spec)
    summary_table(load_run(run_dir).points)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from orchestra_kit.lab.analysis import (
        KneeResult,
        UslFit,
        audit,
        describe_run,
        fit_usl,
        fit_usl_points,
        geometric_knee,
        slo_knee,
        summary_table,
        throughput_knee,
    )
    from orchestra_kit.lab.chat_lab import (
        chat_demo,
        load_chat_run,
        run_chat_point,
        run_chat_sweep,
    )
    from orchestra_kit.lab.comparison import Comparison, compare
    from orchestra_kit.lab.genbench import measure_generator
    from orchestra_kit.lab.histogram import LatencyHistogram
    from orchestra_kit.lab.loadgen import ClosedLoop, OpenLoop, run_load
    from orchestra_kit.lab.plots import (
        plot_before_after,
        plot_distribution,
        plot_latency,
        plot_report,
        plot_success,
        plot_throughput,
        plot_timeline,
        save_figure,
    )
    from orchestra_kit.lab.plots_chat import plot_chat_latency
    from orchestra_kit.lab.report import Report, build_report, compare_runs
    from orchestra_kit.lab.report_html import (
        ReportLink,
        compare_report,
        html_report,
        write_compare_html,
        write_html_report,
    )
    from orchestra_kit.lab.results import RunData, Slo, latest_run, load_run
    from orchestra_kit.lab.scaleout import plot_scaleout, run_scaleout_bench, scaleout_frame
    from orchestra_kit.lab.seedtable import SeedTable, measure_seed_table
    from orchestra_kit.lab.spec import ExperimentSpec, load_spec
    from orchestra_kit.lab.sweep import PointDone, run_experiment, service_settings
    from orchestra_kit.lab.widgets import (
        LAB_DEFAULTS,
        SETTINGS_KNOBS,
        PanelRun,
        TuningPanel,
        watch_tasks,
    )
    from orchestra_kit.lab.workers import WorkerSlice, run_worker_slice
    from orchestra_kit.lab.workloads import make_workload

__all__ = [
    "LAB_DEFAULTS",
    "SETTINGS_KNOBS",
    "ClosedLoop",
    "Comparison",
    "ExperimentSpec",
    "KneeResult",
    "LatencyHistogram",
    "OpenLoop",
    "PanelRun",
    "PointDone",
    "Report",
    "ReportLink",
    "RunData",
    "SeedTable",
    "Slo",
    "TuningPanel",
    "UslFit",
    "WorkerSlice",
    "audit",
    "build_report",
    "chat_demo",
    "compare",
    "compare_report",
    "compare_runs",
    "describe_run",
    "fit_usl",
    "fit_usl_points",
    "geometric_knee",
    "html_report",
    "latest_run",
    "load_chat_run",
    "load_run",
    "load_spec",
    "make_workload",
    "measure_generator",
    "measure_seed_table",
    "plot_before_after",
    "plot_chat_latency",
    "plot_distribution",
    "plot_latency",
    "plot_report",
    "plot_scaleout",
    "plot_success",
    "plot_throughput",
    "plot_timeline",
    "run_chat_point",
    "run_chat_sweep",
    "run_experiment",
    "run_load",
    "run_scaleout_bench",
    "run_worker_slice",
    "save_figure",
    "scaleout_frame",
    "service_settings",
    "slo_knee",
    "summary_table",
    "throughput_knee",
    "watch_tasks",
    "write_compare_html",
    "write_html_report",
]

_WHERE = {
    "ClosedLoop": "orchestra_kit.lab.loadgen",
    "Comparison": "orchestra_kit.lab.comparison",
    "chat_demo": "orchestra_kit.lab.chat_lab",
    "load_chat_run": "orchestra_kit.lab.chat_lab",
    "plot_chat_latency": "orchestra_kit.lab.plots_chat",
    "run_chat_point": "orchestra_kit.lab.chat_lab",
    "run_chat_sweep": "orchestra_kit.lab.chat_lab",
    "ExperimentSpec": "orchestra_kit.lab.spec",
    "KneeResult": "orchestra_kit.lab.analysis",
    "LAB_DEFAULTS": "orchestra_kit.lab.widgets",
    "LatencyHistogram": "orchestra_kit.lab.histogram",
    "OpenLoop": "orchestra_kit.lab.loadgen",
    "PanelRun": "orchestra_kit.lab.widgets",
    "PointDone": "orchestra_kit.lab.sweep",
    "Report": "orchestra_kit.lab.report",
    "ReportLink": "orchestra_kit.lab.report_html",
    "RunData": "orchestra_kit.lab.results",
    "SETTINGS_KNOBS": "orchestra_kit.lab.widgets",
    "SeedTable": "orchestra_kit.lab.seedtable",
    "Slo": "orchestra_kit.lab.results",
    "TuningPanel": "orchestra_kit.lab.widgets",
    "UslFit": "orchestra_kit.lab.analysis",
    "WorkerSlice": "orchestra_kit.lab.workers",
    "audit": "orchestra_kit.lab.analysis",
    "build_report": "orchestra_kit.lab.report",
    "compare": "orchestra_kit.lab.comparison",
    "compare_report": "orchestra_kit.lab.report_html",
    "compare_runs": "orchestra_kit.lab.report",
    "describe_run": "orchestra_kit.lab.analysis",
    "fit_usl": "orchestra_kit.lab.analysis",
    "fit_usl_points": "orchestra_kit.lab.analysis",
    "geometric_knee": "orchestra_kit.lab.analysis",
    "html_report": "orchestra_kit.lab.report_html",
    "latest_run": "orchestra_kit.lab.results",
    "load_run": "orchestra_kit.lab.results",
    "load_spec": "orchestra_kit.lab.spec",
    "make_workload": "orchestra_kit.lab.workloads",
    "measure_generator": "orchestra_kit.lab.genbench",
    "measure_seed_table": "orchestra_kit.lab.seedtable",
    "plot_before_after": "orchestra_kit.lab.plots",
    "plot_distribution": "orchestra_kit.lab.plots",
    "plot_latency": "orchestra_kit.lab.plots",
    "plot_report": "orchestra_kit.lab.plots",
    "plot_success": "orchestra_kit.lab.plots",
    "plot_throughput": "orchestra_kit.lab.plots",
    "plot_scaleout": "orchestra_kit.lab.scaleout",
    "run_scaleout_bench": "orchestra_kit.lab.scaleout",
    "scaleout_frame": "orchestra_kit.lab.scaleout",
    "plot_timeline": "orchestra_kit.lab.plots",
    "run_experiment": "orchestra_kit.lab.sweep",
    "run_load": "orchestra_kit.lab.loadgen",
    "run_worker_slice": "orchestra_kit.lab.workers",
    "save_figure": "orchestra_kit.lab.plots",
    "service_settings": "orchestra_kit.lab.sweep",
    "slo_knee": "orchestra_kit.lab.analysis",
    "summary_table": "orchestra_kit.lab.analysis",
    "throughput_knee": "orchestra_kit.lab.analysis",
    "watch_tasks": "orchestra_kit.lab.widgets",
    "write_compare_html": "orchestra_kit.lab.report_html",
    "write_html_report": "orchestra_kit.lab.report_html",
}
__getattr__ = lazy_getattr(__name__, _WHERE)
