"""Answers of cached reads kept as the encoded bytes (and their gzip form).

A read by key or a list that the store serves from its cache would still cost a
``to_dict`` per row and a JSON encoding per request (a third of the CPU of
``GET /employees?limit=100``, measured with py-spy; docs/benchmarks.md). This cache
keeps the bytes instead, under the same rule as the store's cache (:mod:`..store.cache`):
the tables' write generations are observed *before* the read, stored with the bytes,
and the bytes are served only while those generations are current and the store's TTL
has not passed — so an answer is never older than a write its client saw acknowledged.
With the store's cache off (``enable_query_caching=False``) nothing is kept here either.
"""

from __future__ import annotations

import gzip
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from aiohttp import hdrs, web

from . import codec

__all__ = ["GZIP_LEVEL", "MAX_BYTES", "EncodedCache"]

GZIP_LEVEL = 5  # aiohttp's own level would be 6 for a few % smaller bodies, every time
MAX_BYTES = 64 * 2**20  # encoded bodies kept at most (a gzip form adds a fraction)


class _Entry:
    __slots__ = ("body", "expires_at", "gens", "gz")

    def __init__(self, gens: tuple[int, ...], expires_at: float, body: bytes) -> None:
        self.gens = gens
        self.expires_at = expires_at
        self.body = body
        self.gz: bytes | None = None


class EncodedCache:
    """LRU of encoded answers keyed by query, validated by the store's generations."""

    def __init__(self, *, max_entries: int, gzip_min_bytes: int,
                 max_bytes: int = MAX_BYTES, clock: Callable[[], float] = time.monotonic) -> None:
        self._max = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._gzip_min = gzip_min_bytes
        self._clock = clock
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def hit(self, request: web.Request, store: Any, key: Hashable,
            tables: tuple[str, ...]) -> web.Response | None:
        """The cached answer when still valid (counted as a hit), else None (nothing
        counted: :meth:`answer` follows)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        gens_of = getattr(store, "generations", None)
        if (gens_of is None or entry.gens != gens_of(tables)
                or self._clock() >= entry.expires_at):
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return self._response(request, entry)

    async def answer(self, request: web.Request, store: Any, key: Hashable,
                     tables: tuple[str, ...], load: Callable[[], Awaitable[Any]]) -> web.Response:
        """200 with ``load()``'s value as JSON, from the bytes cached when still valid."""
        gens_of = getattr(store, "generations", None)
        gens = gens_of(tables) if gens_of is not None else None
        entry = self._entries.get(key) if gens is not None else None
        if entry is not None and entry.gens == gens and self._clock() < entry.expires_at:
            self.hits += 1
            self._entries.move_to_end(key)
        else:
            self.misses += 1
            entry = _Entry(gens or (), 0.0, codec.encode(await load()))
            if gens is not None:
                entry.expires_at = self._clock() + float(store.cache_ttl_s)
                self._put(key, entry)
        return self._response(request, entry)

    def _put(self, key: Hashable, entry: _Entry) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= _size(old)
        self._entries[key] = entry
        self._bytes += _size(entry)
        now = self._clock()  # past its TTL an entry is never served: drop those too
        while self._entries and (len(self._entries) > self._max or self._bytes > self._max_bytes
                                 or next(iter(self._entries.values())).expires_at <= now):
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= _size(evicted)

    def _response(self, request: web.Request, entry: _Entry) -> web.Response:
        body = entry.body
        if (self._gzip_min and len(body) >= self._gzip_min
                and "gzip" in request.headers.get(hdrs.ACCEPT_ENCODING, "")):
            if entry.gz is None:
                entry.gz = gzip.compress(body, GZIP_LEVEL, mtime=0)
            return web.Response(body=entry.gz, content_type="application/json", headers={
                hdrs.CONTENT_ENCODING: "gzip", hdrs.VARY: hdrs.ACCEPT_ENCODING})
        return web.Response(body=body, content_type="application/json")

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, Any]:
        """Hits, misses and size (for /performance)."""
        total = self.hits + self.misses
        return {"hits": self.hits, "misses": self.misses, "size": len(self._entries),
                "bytes": self._bytes, "hit_ratio": self.hits / total if total else 0.0}


def _size(entry: _Entry) -> int:
    return len(entry.body)
