"""The JSON encoder of the HTTP answers: the standard library's, or ``orjson``.

``server.json_encoder`` picks it; :func:`use` is called by ``create_app``, so the
choice is process-wide (like the event loop) and the last application created in a
process sets it. Both write compact UTF-8 JSON; they differ only where the standard
encoder would refuse (NaN/infinity become ``null`` under orjson) — no answer of this
API carries such values.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError

__all__ = ["ENCODERS", "current", "encode", "use"]

_stdlib = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _stdlib_encode(data: Any) -> bytes:
    return _stdlib(data).encode()


def _orjson_encoder() -> Callable[[Any], bytes]:
    import orjson

    opts = orjson.OPT_NON_STR_KEYS

    def encode(data: Any) -> bytes:
        return orjson.dumps(data, option=opts)

    return encode


ENCODERS: dict[str, Callable[[], Callable[[Any], bytes]]] = {
    "stdlib": lambda: _stdlib_encode,
    "orjson": _orjson_encoder,
}
_current = ["stdlib", _stdlib_encode]


def use(name: str) -> None:
    """Encode every answer of this process with ``name`` ("stdlib" or "orjson")."""
    factory = ENCODERS.get(name)
    if factory is None:
        raise ConfigError("server.json_encoder", name, f"must be one of {', '.join(ENCODERS)}")
    try:
        fn = factory()
    except ImportError:
        raise ConfigError("server.json_encoder", name,
                          f"needs the {name} package (pip install {name})") from None
    _current[:] = [name, fn]


def current() -> str:
    """The encoder in use."""
    return str(_current[0])


def encode(data: Any) -> bytes:
    """Compact UTF-8 JSON with the encoder in use."""
    fn: Callable[[Any], bytes] = _current[1]  # type: ignore[assignment]
    return fn(data)
