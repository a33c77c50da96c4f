"""Regression tests for the store and validator defects of issue 12: leases taken with
another employee's task id, symlinked spellings of one file, NUL in model names, and
two services on one SQLite database."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestra_kit.config import DatabaseSettings, OptimizationFlags
from orchestra_kit.errors import ConflictError, StoreError, ValidationError
from orchestra_kit.models import TaskStatus, normalise_path, validate_model
from orchestra_kit.store import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    async with Store(DatabaseSettings(path=str(tmp_path / "t.db")), OptimizationFlags(),
                     project_root=root) as s:
        await s.hire_many([{"name": "alice", "role": "dev"}, {"name": "bob", "role": "dev"}])
        yield s


async def test_lease_with_another_employees_task_id_is_refused(store: Store) -> None:
    """Low: bob's lease tagged with alice's task used to be released when her task ended."""
    task = await store.create_task("alice", "work")
    with pytest.raises(ConflictError, match="task .* belongs to 'alice', not 'bob'"):
        await store.lock_files("bob", ["src/x.py"], task_id=task.id)
    assert await store.list_leases() == []
    assert await store.lock_files("alice", ["src/x.py"], task_id=task.id) == {"src/x.py": "locked"}


async def test_ending_a_task_never_releases_another_employees_lease(store: Store) -> None:
    task = await store.create_task("alice", "work")
    assert await store.lock_files("bob", ["src/y.py"]) == {"src/y.py": "locked"}
    await store.transition(task.id, TaskStatus.RUNNING)
    await store.transition(task.id, TaskStatus.COMPLETED)
    assert await store.release_task_leases(task.id) == []
    assert [x.path for x in await store.list_leases()] == ["src/y.py"]


async def test_two_spellings_of_one_file_through_a_link_are_one_lease(store: Store) -> None:
    """Low: a folder link inside the root made one file leasable twice."""
    root = store.project_root
    (root / "src" / "real.py").write_text("x")
    (root / "alias").symlink_to(root / "src", target_is_directory=True)
    (root / "same.py").symlink_to(root / "src" / "real.py")
    assert await store.lock_files("alice", ["src/real.py"]) == {"src/real.py": "locked"}
    assert await store.lock_files("bob", ["alias/real.py"]) == {"src/real.py": "locked_by:alice"}
    assert await store.lock_files("bob", ["same.py"]) == {"src/real.py": "locked_by:alice"}
    assert [x.path for x in await store.list_leases()] == ["src/real.py"]


async def test_a_link_out_of_the_root_is_refused(store: Store, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.project_root / "escape").symlink_to(outside, target_is_directory=True)
    (store.project_root / "passwd").symlink_to("/etc/passwd")
    for path in ("escape/secret.txt", "passwd", str(store.project_root / "escape")):
        with pytest.raises(ValidationError, match="outside the project root"):
            await store.lock_files("alice", [path])
    with pytest.raises(ValidationError, match=r"files\[0\].*outside the project root"):
        await store.create_task("alice", "x", files=["escape/secret.txt"])


def test_normalise_path_resolves_only_links(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").symlink_to(tmp_path / "a", target_is_directory=True)
    assert normalise_path(tmp_path, "b/new/deeper.py") == "a/new/deeper.py"  # need not exist
    assert normalise_path(tmp_path, "a/../b/x") == "a/x"
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(ValidationError, match="path"):
        normalise_path(tmp_path, "loop/x")


@given(st.text(min_size=1, max_size=40))
def test_model_names_with_control_characters_are_refused(name: str) -> None:
    """Low: a NUL in a model name was accepted, then failed inside the agent."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name) or not name.strip():
        with pytest.raises(ValidationError, match="^model: "):
            validate_model(name)
    else:
        assert validate_model(name) == name


async def test_store_refuses_a_model_with_nul(store: Store) -> None:
    (bad,) = await store.create_tasks([{"employee": "alice", "description": "x",
                                        "model": "m\x00"}])
    assert isinstance(bad, ValidationError) and bad.field == "tasks[0].model"
    assert "control characters" in bad.problem
    with pytest.raises(ValidationError, match="model: must not contain control"):
        await store.create_task("alice", "x", model="gpt\x00-4")


_HOLDER = """
import asyncio, sys
from pathlib import Path
from orchestra_kit.config import DatabaseSettings, OptimizationFlags
from orchestra_kit.store import Store
async def main():
    async with Store(DatabaseSettings(path=sys.argv[1]), OptimizationFlags(),
                     project_root=Path(sys.argv[2])):
        print("open", flush=True)
        sys.stdin.readline()
asyncio.run(main())
"""


async def test_a_second_store_on_one_database_is_refused(tmp_path: Path) -> None:
    """Medium 10: two services on one SQLite file both ran and re-ran each other's tasks."""
    db = tmp_path / "shared.db"
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLDER, str(db), str(tmp_path),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert holder.stdin is not None and holder.stdout is not None
    try:
        async with asyncio.timeout(60):
            assert (await holder.stdout.readline()).strip() == b"open"
        second = Store(DatabaseSettings(path=str(db)), OptimizationFlags(), project_root=tmp_path)
        with pytest.raises(StoreError, match=f"{db}.*in use by.*pid {holder.pid}"):
            await second.start()
        await second.aclose()
    finally:
        holder.stdin.close()
        async with asyncio.timeout(30):
            assert await holder.wait() == 0
    async with Store(DatabaseSettings(path=str(db)), OptimizationFlags(),
                     project_root=tmp_path) as again:  # the lock went with its holder
        assert await again.list_employees() == []
    assert os.path.exists(f"{db}.lock")
