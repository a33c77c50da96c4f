"""Generator workers on dask.distributed (a LocalCluster on 127.0.0.1): a dask-driven
concurrency sweep gives the same tables as a local one, and a worker that dies is a
failure, never a retry that would send its share twice."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from lab_workloads import DieInWorker, GetPath

from orchestra_kit.lab.dask_engine import open_dask_engine
from orchestra_kit.lab.loadgen import OpenLoop
from orchestra_kit.lab.spec import parse_spec
from orchestra_kit.lab.sweep import run_experiment
from orchestra_kit.lab.workers import WorkerFailed, WorkerSlice, split

pytest.importorskip("distributed")


def _doc(engine: str) -> dict[str, object]:
    return {"name": f"conc-{engine}", "seed": 3, "x": "load.users",
            "target": {"kind": "inprocess"},
            "generator": {"processes": 2, "engine": engine, "client": "raw"},
            "workload": {"kind": "hire", "team_size": 2},
            "load": {"model": "closed", "users": 2, "duration_s": 0.4},
            "sweep": {"load.users": [2, 4]}}


async def test_a_dask_sweep_gives_the_same_tables_as_a_local_one(tmp_path: Path) -> None:
    dirs = {}
    for engine in ("local", "dask"):
        dirs[engine] = await run_experiment(parse_spec(_doc(engine)), results_root=tmp_path,
                                            progress=False, calibration=False)
    points = {e: pd.read_csv(d / "points.csv") for e, d in dirs.items()}
    requests = {e: pd.read_csv(d / "requests.csv") for e, d in dirs.items()}
    assert list(points["dask"].columns) == list(points["local"].columns)
    assert list(requests["dask"].columns) == list(requests["local"].columns)
    dask_points = points["dask"]
    assert dask_points["concurrency"].tolist() == [2, 4]
    assert (dask_points["n_ok"] > 0).all() and (dask_points["n_ok"] == dask_points["n"]).all()
    assert (dask_points["gen_processes"] == 2).all()
    assert set(requests["dask"]["worker"]) == {0, 1}
    for row in dask_points.itertuples():  # every request of both workers, none doubled
        group = requests["dask"][requests["dask"]["point"] == row.point]
        assert len(group) == row.n
        assert set(group["user"]) == set(range(row.concurrency))
    manifest = json.loads((dirs["dask"] / "manifest.json").read_text())
    assert manifest["generator"]["engine"] == "dask" and manifest["failed_points"] == []


async def test_a_dead_dask_worker_is_a_failure(truth_url: str) -> None:
    model = OpenLoop(rate_rps=100, arrival="constant")
    slices = [WorkerSlice(url=truth_url, workload=DieInWorker("/health"), model=model, part=p,
                          duration_s=1.0, client="raw") for p in split(model, 1.0, None, 0, 2)]
    async with open_dask_engine(n_workers=2) as engine:
        with pytest.raises(WorkerFailed, match="died"):
            await engine.run(slices, model=model, duration_s=1.0)


async def test_too_few_dask_workers_is_a_clear_error(truth_url: str) -> None:
    model = OpenLoop(rate_rps=10, arrival="constant")
    slices = [WorkerSlice(url=truth_url, workload=DieInWorker("/health"), model=model, part=p,
                          duration_s=0.2, client="raw") for p in split(model, 0.2, None, 0, 2)]
    async with open_dask_engine(n_workers=1) as engine:
        with pytest.raises(WorkerFailed, match="has 1 worker"):
            await engine.run(slices, model=model, duration_s=0.2)


async def test_an_existing_scheduler_runs_one_slice_per_worker(truth_url: str) -> None:
    from distributed import LocalCluster

    model = OpenLoop(rate_rps=40, arrival="constant")
    slices = [WorkerSlice(url=truth_url, workload=GetPath("/health"), model=model, part=p,
                          duration_s=0.5, client="raw") for p in split(model, 0.5, None, 0, 2)]
    cluster_cm = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,  # type: ignore[no-untyped-call]
                              host="127.0.0.1", dashboard_address="127.0.0.1:0",
                              asynchronous=True)
    async with cluster_cm as cluster, open_dask_engine(cluster.scheduler_address) as engine:
        assert not engine.local and await engine.count() == 2
        run = await engine.run(slices, model=model, duration_s=0.5)
    assert [r.index for r in run.records] == list(range(20))
    assert {r.worker for r in run.records} == {0, 1} and all(r.ok for r in run.records)
    assert run.generator["engine"] == "dask" and run.generator["processes"] == 2


async def test_an_unreachable_scheduler_is_a_clear_error() -> None:
    import socket

    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(WorkerFailed, match="cannot reach dask scheduler"):
        async with open_dask_engine(f"tcp://127.0.0.1:{port}", connect_timeout_s=1.0):
            pass


async def test_the_progress_bar_moves_while_dask_slices_run(truth_url: str) -> None:
    model = OpenLoop(rate_rps=100, arrival="constant")
    slices = [WorkerSlice(url=truth_url, workload=GetPath("/health"), model=model, part=p,
                          duration_s=2.0, client="raw") for p in split(model, 2.0, None, 0, 2)]
    seen: list[int] = []
    async with open_dask_engine(n_workers=2) as engine:
        run = await engine.run(slices, model=model, duration_s=2.0, on_progress=seen.append)
    total = len(run.records)
    assert seen[-1] == total == 200
    assert any(0 < n < total for n in seen), f"no update before the end: {seen}"
    assert seen == sorted(seen)  # counts only grow
