"""The hire and assign fast paths never accept what the strict model refuses, and give
its values."""

from __future__ import annotations

import json

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestra_kit.server.plainbody import plain_assign, plain_hire
from orchestra_kit.server.schemas import AssignBody, HireBody

_TEXT = st.one_of(st.sampled_from(["ann", "b-1", "dev", " dev ", "smart", "normal", "", " ",
                                   "a" * 51, "x\ty", "zoë", "\u2003lead\u2003", "\ud800"]),
                  st.text(max_size=60))
_VALUE = st.one_of(_TEXT, st.integers(), st.booleans(), st.none(), st.lists(st.integers(), max_size=2))
_KEYS = st.sampled_from(["name", "role", "smartness", "employee", "extra"])


def _model(raw: bytes) -> tuple[str, str, str] | None:
    try:
        body = HireBody.model_validate_json(raw, strict=True)
    except pydantic.ValidationError:
        return None
    return body.name, body.role, str(body.smartness)


def _raw(doc: object) -> bytes:
    return json.dumps(doc).encode()  # ASCII escapes: lone surrogates survive as \\udxxx


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _VALUE, max_size=4))
def test_fast_path_agrees_with_the_model(doc: dict[str, object]) -> None:
    raw = _raw(doc)
    fast = plain_hire(raw)
    if fast is not None:
        assert fast == _model(raw)


@pytest.mark.parametrize("doc", [
    {"name": "ann", "role": "dev"},
    {"name": "b_2", "role": "  tech lead ", "smartness": "smart"},
    {"name": "c", "role": "développeuse", "smartness": "normal"},
])
def test_plain_bodies_take_the_fast_path(doc: dict[str, str]) -> None:
    raw = json.dumps(doc, ensure_ascii=False).encode()
    assert plain_hire(raw) is not None
    assert plain_hire(raw) == _model(raw)


@pytest.mark.parametrize("raw", [
    b'{"name": "ann", "role": "dev", "extra": 1}', b'{"name": "ann"}', b'[]', b'{',
    b'{"name": "ann", "role": "\\ud800"}', b'{"name": "ann", "role": "dev", "smartness": "x"}',
    b'{"name": "a b", "role": "dev"}', b'{"name": "ann", "role": "' + b"r" * 51 + b'"}',
    b'{"name": "ann", "role": "dev\\n"}', b'{"name": 1, "role": "dev"}', b'\xff\xfe{}',
])
def test_everything_else_goes_to_the_model(raw: bytes) -> None:
    assert plain_hire(raw) is None


@pytest.mark.parametrize("raw", [
    b'{"name": "a", "name": "b", "role": "dev"}',
    b'{"name": "a", "role": "x", "role": "dev", "smartness": "smart"}',
])
def test_repeated_keys_resolve_as_the_model_does(raw: bytes) -> None:
    fast = plain_hire(raw)
    assert fast is None or fast == _model(raw)


# ---------------------------------------------------------------------- POST /tasks

_TASK_TEXT = st.one_of(st.sampled_from(["ann", "b-1", "fix it", " ", "", "a\x00b", "x" * 10_001,
                                        "build", "chat", "analyze", "Build", "gpt-4o",
                                        "m\x7f", "m\n", " m ", "\ud800", "\u2003"]),
                       st.text(max_size=40))
_TASK_VALUE = st.one_of(_TASK_TEXT, st.integers(-2, 12), st.booleans(), st.none(),
                        st.floats(allow_nan=False, allow_infinity=False),
                        st.lists(st.sampled_from(["a.py", "", "../x"]), max_size=2),
                        st.dictionaries(st.sampled_from(["a"]), st.integers(), max_size=1))
_TASK_KEYS = st.sampled_from(["name", "task", "model", "mode", "priority", "files",
                              "employee", "description", "extra"])


def _assign_model(raw: bytes) -> tuple[object, ...] | None:
    try:
        body = AssignBody.model_validate_json(raw, strict=True)
    except pydantic.ValidationError:
        return None
    return body.name, body.task, body.model, body.mode, body.priority, body.files


def _assign_fast(raw: bytes) -> tuple[object, ...] | None:
    fast = plain_assign(raw)
    return None if fast is None else (fast.name, fast.task, fast.model, fast.mode,
                                      fast.priority, fast.files)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(_TASK_KEYS, _TASK_VALUE, max_size=6))
def test_assign_fast_path_agrees_with_the_model(doc: dict[str, object]) -> None:
    raw = _raw(doc)
    fast = _assign_fast(raw)
    if fast is not None:
        assert fast == _assign_model(raw)
        assert type(fast[3]) is type(_assign_model(raw)[3])  # a TaskMode, like the model's


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({"name": st.sampled_from(["ann", "b-1", "c_2"]),
                              "task": _TASK_TEXT},
                             optional={"model": st.one_of(st.none(), _TASK_TEXT),
                                       "mode": _TASK_TEXT, "priority": _TASK_VALUE,
                                       "files": st.just([])}))
def test_assign_fast_path_on_near_valid_bodies(doc: dict[str, object]) -> None:
    """Bodies that are mostly valid: where the fast path answers, the model agrees."""
    raw = _raw(doc)
    fast = _assign_fast(raw)
    if fast is not None:
        assert fast == _assign_model(raw)


@pytest.mark.parametrize("doc", [
    {"name": "ann", "task": "bench"},
    {"name": "b-1", "task": "  fix the build ", "mode": "chat", "priority": 10},
    {"name": "c_2", "task": "déployer", "model": "gpt-4o", "mode": "analyze", "priority": 0,
     "files": []},
    {"name": "d", "task": "t", "model": None},
])
def test_plain_assign_bodies_take_the_fast_path(doc: dict[str, object]) -> None:
    raw = json.dumps(doc, ensure_ascii=False).encode()
    assert _assign_fast(raw) is not None
    assert _assign_fast(raw) == _assign_model(raw)


@pytest.mark.parametrize("raw", [
    b'{"employee": "ann", "task": "t"}', b'{"name": "ann", "description": "t"}',
    b'{"name": "ann", "task": "t", "files": ["a.py"]}', b'{"name": "ann", "task": " "}',
    b'{"name": "ann", "task": "t", "priority": true}', b'{"name": "ann", "task": "t", "priority": 5.0}',
    b'{"name": "ann", "task": "t", "priority": 11}', b'{"name": "ann", "task": "t", "mode": "x"}',
    b'{"name": "ann", "task": "t", "mode": ["build"]}', b'{"name": "ann", "task": "t", "model": ""}',
    b'{"name": "ann", "task": "t", "model": "m\\n"}', b'{"name": "ann", "task": "a\\u0000b"}',
    b'{"name": "ann", "task": "\\ud800"}', b'{"name": "a b", "task": "t"}', b'[]', b'{',
    b'{"name": "ann", "task": "t", "extra": 1}', b'{"name": "ann"}',
])
def test_other_assign_bodies_go_to_the_model(raw: bytes) -> None:
    assert plain_assign(raw) is None
