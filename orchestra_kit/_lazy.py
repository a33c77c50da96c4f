"""Lazy public names: ``from orchestra_kit import Service`` without importing every layer.

A package's ``__init__`` lists its public names and the module each lives in; the module
is imported on first access (PEP 562), so ``orchestra fake-llm`` or a generator worker
does not pay for aiohttp's server, pandas or matplotlib it never uses.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving ``where[name]`` (a module path) on first use."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals_ = importlib.import_module(package).__dict__
        globals_[name] = value  # resolve once
        return value

    return __getattr__
