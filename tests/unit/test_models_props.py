"""Property tests for the validators in orchestra_kit.models."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestra_kit.errors import ValidationError
from orchestra_kit.models import (
    NAME_PATTERN,
    normalise_path,
    validate_description,
    validate_employee_name,
    validate_files,
    validate_priority,
    validate_role,
)

ROOT = Path("/srv/project")
NAME_RE = re.compile(NAME_PATTERN)
name_chars = st.sampled_from("abcXYZ019_-")
valid_names = st.builds(lambda first, rest: first + rest,
                        st.sampled_from("aZ09"), st.text(name_chars, max_size=63))


@given(valid_names)
def test_valid_names_accepted(name: str) -> None:
    assert validate_employee_name(name) == name


@given(st.text(max_size=80))
def test_names_match_the_pattern_or_are_rejected(name: str) -> None:
    if NAME_RE.fullmatch(name):
        assert validate_employee_name(name) == name
    else:
        with pytest.raises(ValidationError) as ei:
            validate_employee_name(name, "employees[2].name")
        assert ei.value.field == "employees[2].name"


@given(st.one_of(st.integers(), st.none(), st.floats(), st.lists(st.text())))
def test_non_string_names_rejected(value: object) -> None:
    with pytest.raises(ValidationError):
        validate_employee_name(value)


@settings(max_examples=300)
@given(st.lists(st.sampled_from(["a", "b", "..", ".", "", "src", "x.py", "/", "\\"]),
                max_size=8).map("/".join))
def test_normalise_path_stays_inside_root(path: str) -> None:
    try:
        rel = normalise_path(ROOT, path)
    except ValidationError as e:
        assert e.field == "path"
        return
    assert ".." not in PurePosixPath(rel).parts
    assert not rel.startswith("/")
    full = PurePosixPath(ROOT.resolve().as_posix()) / rel
    assert str(full).startswith(ROOT.resolve().as_posix() + "/")


@given(st.text(max_size=60))
def test_normalise_path_any_text(path: str) -> None:
    try:
        rel = normalise_path(ROOT, path)
    except ValidationError:
        return
    assert "\x00" not in rel and ".." not in PurePosixPath(rel).parts and rel not in ("", ".")


@given(st.text(st.sampled_from("ab./"), min_size=1, max_size=20))
def test_absolute_outside_root_rejected(tail: str) -> None:
    with pytest.raises(ValidationError):
        normalise_path(ROOT, "/etc/" + tail if not tail.startswith("/") else "/etc" + tail)


@given(st.lists(st.sampled_from(["a.py", "./a.py", "b/c.py", "b//c.py"]), max_size=10))
def test_validate_files_dedupes(files: list[str]) -> None:
    out = validate_files(ROOT, files)
    assert len(out) == len(set(out)) and set(out) <= {"a.py", "b/c.py"}


@given(st.integers(0, 10))
def test_priorities_in_range(p: int) -> None:
    assert validate_priority(p) == p


@given(st.one_of(st.integers().filter(lambda v: not 0 <= v <= 10), st.booleans(), st.floats(),
                 st.text(), st.none()))
def test_bad_priorities_rejected(p: object) -> None:
    with pytest.raises(ValidationError) as ei:
        validate_priority(p, "tasks[0].priority")
    assert ei.value.field == "tasks[0].priority"


@given(st.text(min_size=1, max_size=200))
def test_descriptions(text: str) -> None:
    if text.strip() and "\x00" not in text:
        assert validate_description(text) == text
    else:
        with pytest.raises(ValidationError):
            validate_description(text)


def test_description_length_limit() -> None:
    assert validate_description("x" * 10_000)
    with pytest.raises(ValidationError):
        validate_description("x" * 10_001)


@given(st.text(max_size=70))
def test_roles(role: str) -> None:
    stripped = role.strip()
    ok = 1 <= len(stripped) <= 50 and not any(ord(c) < 32 for c in stripped)
    if ok:
        assert validate_role(role) == stripped
    else:
        with pytest.raises(ValidationError):
            validate_role(role)


@pytest.mark.parametrize("name", ["bob\n", "bob\r\n", "\nbob", "bo b", "", "-bob", "a" * 65])
def test_name_edge_cases_rejected(name: str) -> None:
    with pytest.raises(ValidationError):
        validate_employee_name(name)
