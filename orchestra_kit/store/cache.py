"""A TTL cache whose entries are only served while their tables' generations are current.

The writer bumps a per-table generation for every committed write *before* the writing
caller is answered. A read records the generations it observed *before* querying and
stores them with its value; an entry is served only while those generations are still
the current ones (and its TTL has not passed). A read that raced a write therefore
stores an entry that is never served, and no caller can read data older than a write
it has seen acknowledged.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["MISS", "GenerationCache"]

MISS: Any = object()


class GenerationCache:
    """LRU + TTL cache keyed by query, validated by table generations."""

    def __init__(self, *, ttl_s: float, max_entries: int, clock: Callable[[], float]) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[tuple[int, ...], float, Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, gens: tuple[int, ...]) -> Any:
        """The cached value, or :data:`MISS`."""
        entry = self._entries.get(key)
        if entry is not None:
            entry_gens, expires_at, value = entry
            if entry_gens == gens and self._clock() < expires_at:
                self._entries.move_to_end(key)
                self.hits += 1
                return value
            del self._entries[key]
        self.misses += 1
        return MISS

    def put(
        self, key: Hashable, gens: tuple[int, ...], value: Any, *, valid_until: float | None = None
    ) -> None:
        """Store ``value`` read at ``gens``; ``valid_until`` caps the TTL (lease expiry)."""
        if self._ttl_s <= 0:
            return
        now = self._clock()
        expires_at = now + self._ttl_s
        if valid_until is not None:
            expires_at = min(expires_at, valid_until)
        entries = self._entries
        entries[key] = (gens, expires_at, value)
        entries.move_to_end(key)
        while len(entries) > self._max:
            entries.popitem(last=False)
        # Past its TTL an entry is never served again: drop such entries from the cold
        # end, so what stays was used within one TTL (not max_entries of dead reads).
        while entries and next(iter(entries.values()))[1] <= now:
            entries.popitem(last=False)

    def clear(self) -> None:
        """Drop every entry."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, Any]:
        """Hits, misses, hit ratio and size."""
        total = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_ratio": self.hits / total if total else 0.0,
            "size": len(self._entries),
            "max_entries": self._max,
            "ttl_s": self._ttl_s,
        }
