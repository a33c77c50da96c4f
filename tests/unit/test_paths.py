"""Paths checked once (orchestra_kit.paths): CheckedFiles are trusted only when a
PathChecker made them for the same real root; anything else is checked again."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestra_kit import paths as paths_mod
from orchestra_kit.config import DatabaseSettings, OptimizationFlags
from orchestra_kit.errors import ValidationError
from orchestra_kit.paths import CheckedFiles, PathChecker, check_files, validate_files
from orchestra_kit.store import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    async with Store(DatabaseSettings(path=str(tmp_path / "t.db")), OptimizationFlags(),
                     project_root=root) as s:
        await s.hire_many([{"name": "alice", "role": "dev"}])
        yield s


def test_checker_normalises_dedupes_in_order_and_marks_its_root(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "src", target_is_directory=True)
    checker = PathChecker(tmp_path)
    got = checker.files(["b.py", "src/a.py", "./b.py", "alias/a.py", "c/../d.py", "b.py"])
    assert list(got) == ["b.py", "src/a.py", "d.py"]  # two spellings via a link: one path
    assert isinstance(got, CheckedFiles) and got.checked_against(tmp_path)
    assert check_files(tmp_path, got) is got  # taken as it is: not checked again


def test_dedupe_of_a_full_list_is_linear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """100 distinct paths, then 100 repeats of them: each string normalised once."""
    calls: list[str] = []
    real = paths_mod._normalise
    monkeypatch.setattr(paths_mod, "_normalise",
                        lambda c, p, f: calls.append(p) or real(c, p, f))
    checker = PathChecker(tmp_path)
    names = [f"f{i}.py" for i in range(100)]
    assert list(checker.files(names)) == names
    assert list(checker.files(list(reversed(names)))) == list(reversed(names))
    assert calls == names


def test_hand_made_checked_files_are_checked_again(tmp_path: Path) -> None:
    forged = CheckedFiles(["../etc/passwd"])  # not made by a checker: real_root is None
    assert not forged.checked_against(tmp_path)
    with pytest.raises(ValidationError, match=r"files\[0\]: .*outside the project root"):
        validate_files(tmp_path, forged)


def test_checked_against_another_root_is_checked_again(tmp_path: Path) -> None:
    a, b, outside = tmp_path / "a", tmp_path / "b", tmp_path / "outside"
    for d in (a, b, outside):
        d.mkdir()
    (b / "link").symlink_to(outside, target_is_directory=True)
    from_a = PathChecker(a).files(["link/x.py"])  # no link under a: fine there
    assert list(from_a) == ["link/x.py"] and not from_a.checked_against(b)
    with pytest.raises(ValidationError, match="outside the project root"):
        check_files(b, from_a)


def test_a_copy_by_asdict_is_no_longer_trusted(tmp_path: Path) -> None:
    @dataclasses.dataclass
    class Holder:
        files: tuple[str, ...]

    copied = dataclasses.asdict(Holder(PathChecker(tmp_path).files(["x.py"])))["files"]
    assert list(copied) == ["x.py"] and not copied.checked_against(tmp_path)


async def test_store_trusts_checked_files_and_checks_the_rest(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.project_root / "escape").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValidationError, match="outside the project root"):
        await store.create_task("alice", "x", files=CheckedFiles(["escape/secret"]))
    checked = PathChecker(store.project_root).files(["src/a.py", "src/b.py"])
    calls: list[str] = []
    real = paths_mod._normalise
    monkeypatch.setattr(paths_mod, "_normalise",
                        lambda c, p, f: calls.append(p) or real(c, p, f))
    task = await store.create_task("alice", "x", files=checked)
    assert task.files == ("src/a.py", "src/b.py")
    assert await store.lock_files("alice", task.files, task_id=task.id) == {
        "src/a.py": "locked", "src/b.py": "locked"}
    assert calls == []  # neither the task nor its leases checked the paths again


def _pathlib_rules(root: Path, path: str) -> str | None:
    """The lexical rules as first written with pathlib (the reference): None = refused."""
    from pathlib import PurePosixPath

    root_posix = PurePosixPath(root.resolve().as_posix())
    candidate = PurePosixPath(path.replace("\\", "/"))
    full = candidate if candidate.is_absolute() else root_posix / candidate
    parts: list[str] = []
    for part in full.parts[1:]:
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(part)
    try:
        rel = str(PurePosixPath("/", *parts).relative_to(root_posix))
    except ValueError:
        return None
    return None if rel in ("", ".") else rel


_PIECES = st.sampled_from(["a", "b.py", "..", ".", "", "/", "\\", "//", "x y"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, min_size=1, max_size=8), st.booleans())
def test_string_rules_match_the_pathlib_rules(tmp_path_factory: pytest.TempPathFactory,
                                              pieces: list[str], absolute: bool) -> None:
    root = tmp_path_factory.getbasetemp() / "empty-root"
    root.mkdir(exist_ok=True)
    path = (str(root) + "/" if absolute else "") + "/".join(pieces)
    if not path.strip() or not "".join(pieces).strip():
        return
    expected = _pathlib_rules(root, path)
    try:
        got: str | None = PathChecker(root).path(path)
    except ValidationError:
        got = None
    assert got == expected, path
