"""The largest ``POST /tasks/batch`` the API allows (1,000 tasks x 100 paths, 100,000
distinct paths, some through a link) is accepted and stored exactly; how long it stalls
the loop is measured by ``orchestra bench batch``, not asserted here."""

from __future__ import annotations

import io
import json
from pathlib import Path

import aiohttp
from server_fixtures import make_settings

from orchestra_kit.server import Service
from orchestra_kit.server.benchbatch import EMPLOYEES, batch_body, expected_files, make_tree

TASKS, PATHS = 1000, 100


async def test_a_maximal_batch_is_accepted_and_stored_exactly(tmp_path: Path) -> None:
    root = tmp_path / "project"
    make_tree(root, TASKS)
    body = json.dumps(batch_body(TASKS, PATHS)).encode()
    settings = make_settings(tmp_path, project_root=str(root),
                             **{"server.max_body_bytes": len(body) + 65_536,
                                # tasks stay queued/running; the drain does not wait
                                "agents.sim_latency_ms": 60_000,
                                "scheduler.shutdown_grace_s": 0.2})
    async with Service(settings) as svc, aiohttp.ClientSession() as http:
        for e in range(EMPLOYEES):
            async with http.post(f"{svc.url}/employees", json={"name": f"e{e}", "role": "d"}) as r:
                assert r.status == 201
        async with http.post(f"{svc.url}/tasks/batch", data=io.BytesIO(body),
                             headers={"Content-Type": "application/json"}) as r:
            answer = await r.json()
            assert r.status == 200, answer
        assert answer["message"] == f"Queued {TASKS}/{TASKS} tasks"
        ids = [item["task_id"] for item in answer["items"]]
        assert len(set(ids)) == TASKS and all(item["ok"] for item in answer["items"])
        stored = await svc.state.require_store().list_tasks(limit=TASKS)
        assert [t.id for t in stored] == ids
        assert [list(t.files) for t in stored] == expected_files(TASKS, PATHS)
        assert [t.employee for t in stored] == [f"e{i % EMPLOYEES}" for i in range(TASKS)]


async def test_bench_batch_smoke_reports_a_stall_and_checks_the_result() -> None:
    from orchestra_kit.server.benchbatch import run_batch_bench

    out = await run_batch_bench(tasks=40, paths=10, repeats=1)
    (run,) = out["runs"]
    assert out["all_correct"] and run["queued"] == 40 and run["status"] == 200
    assert run["probe_wakes"] > 0 and 0 <= run["block_max_ms"] and out["distinct_paths"] == 400


async def test_a_link_out_of_the_root_fails_a_large_batch_naming_the_path(tmp_path: Path) -> None:
    """The checks run in a worker thread for a large batch; their rules are the same."""
    root, outside = tmp_path / "project", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "out").symlink_to(outside, target_is_directory=True)
    tasks = [{"name": "e0", "task": f"t{i}", "files": [f"ok/{i}/{j}.py" for j in range(100)]}
             for i in range(30)]  # 3,000 paths: checked off the loop
    tasks[17]["files"][42] = "out/secret.py"
    async with Service(make_settings(tmp_path, project_root=str(root))) as svc, \
            aiohttp.ClientSession() as http:
        async with http.post(f"{svc.url}/employees", json={"name": "e0", "role": "d"}) as r:
            assert r.status == 201
        async with http.post(f"{svc.url}/tasks/batch", json={"tasks": tasks}) as r:
            doc = await r.json()
            assert r.status == 422, doc
        assert doc["error"]["details"]["field"] == "tasks[17].files[42]"
        assert "outside the project root" in doc["error"]["message"]
        assert await svc.state.require_store().list_tasks() == []
