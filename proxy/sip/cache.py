"""Parse caches bounded by bytes as well as entries.

The parsers cache their results because phones repeat the same Via, From
and Contact values in every message.  An ``lru_cache(16384)`` bounds entries
only: 16,000 OPTIONS with a 30 KB Via parameter held half a gigabyte.  Here a
value longer than ``max_key_chars`` is parsed but never cached, and the
cached values' total size stays under ``max_bytes``; the oldest entries go
first (FIFO: a hit costs one dict lookup, no reordering).

The insertion order is kept in a deque beside the dict.  Evicting with
``next(iter(dict))`` instead looked free but is not: deleting a dict's first
entry leaves a dummy slot that every later ``iter`` walks past until the
dict is next resized, so at steady state (phones' tags and branches make most
values unique: a miss and an eviction per new value) each eviction scanned
thousands of dead slots, ~10 us instead of ~0.1 us.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

# per entry, on top of the key's characters: the dict slot, the parsed object
# and its own copies of the key's substrings (charged as the key once more)
_ENTRY_OVERHEAD = 200


class BoundedCache(Generic[T]):
    """``cache(fn)(key)``: fn's result for a str key, cached within the bounds."""

    __slots__ = ("fn", "max_entries", "max_bytes", "max_key_chars", "_data", "_order", "_bytes",
                 "__wrapped__")

    def __init__(self, fn: Callable[[str], T], max_entries: int, max_bytes: int, max_key_chars: int):
        self.fn = fn
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_key_chars = max_key_chars
        self._data: dict[str, T] = {}
        self._order: deque[str] = deque()      # keys, oldest first (see the module doc)
        self._bytes = 0
        self.__wrapped__ = fn

    def __call__(self, key: str) -> T:
        data = self._data
        hit = data.get(key)
        if hit is not None:
            return hit
        value = self.fn(key)
        if len(key) <= self.max_key_chars and key not in data:   # (a cached None is no hit)
            cost = _cost(key)
            order = self._order
            while order and (len(data) >= self.max_entries or self._bytes + cost > self.max_bytes):
                old = order.popleft()
                del data[old]
                self._bytes -= _cost(old)
            data[key] = value
            order.append(key)
            self._bytes += cost
        return value

    def cache_clear(self) -> None:
        self._data.clear()
        self._order.clear()
        self._bytes = 0

    def cache_bytes(self) -> int:
        """Estimated bytes held (what the bound is checked against)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._data)


def _cost(key: str) -> int:
    return 2 * len(key) + _ENTRY_OVERHEAD


def bounded_cache(max_entries: int = 16384, max_bytes: int = 8 * 1024 * 1024,
                  max_key_chars: int = 512) -> Callable[[Callable[[str], T]], BoundedCache[T]]:
    def wrap(fn: Callable[[str], T]) -> BoundedCache[T]:
        return BoundedCache(fn, max_entries, max_bytes, max_key_chars)
    return wrap
