"""The hire fast path never accepts what the strict model refuses, and gives its values."""

from __future__ import annotations

import json

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestra_kit.server.plainbody import plain_hire
from orchestra_kit.server.schemas import HireBody

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
