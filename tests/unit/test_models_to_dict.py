"""``Task.to_dict`` is written field by field (for speed): it must still carry every field."""

from __future__ import annotations

from dataclasses import asdict, fields

from orchestra_kit.models import Task, TaskMode, TaskStatus


def test_task_to_dict_has_every_field_as_asdict_would() -> None:
    task = Task(id=3, employee="a", description="d", priority=9, model="m",
                mode=TaskMode.CHAT, files=("x.py", "y.py"), status=TaskStatus.FAILED,
                attempts=2, created_at=1.0, started_at=2.0, finished_at=3.0, result=None,
                error="boom", progress=40)
    expected = asdict(task) | {"mode": "chat", "status": "failed", "files": ["x.py", "y.py"]}
    assert task.to_dict() == expected
    assert list(task.to_dict()) == [f.name for f in fields(Task)]
