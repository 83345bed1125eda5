"""The parse caches' bound (proxy/sip/cache.py): oldest entries go first, in order."""
from __future__ import annotations

from proxy.sip.cache import BoundedCache


def _cache(**bounds) -> tuple[BoundedCache, list[str]]:
    parsed: list[str] = []

    def fn(key: str) -> str:
        parsed.append(key)
        return key.upper()
    options = {"max_entries": 3, "max_bytes": 10**9, "max_key_chars": 100, **bounds}
    return BoundedCache(fn, **options), parsed


def test_evicts_oldest_first_and_keeps_hits():
    cache, parsed = _cache()
    for key in ("a", "b", "c", "a", "d", "e"):
        assert cache(key) == key.upper()
    assert parsed == ["a", "b", "c", "d", "e"]         # "a" was a hit: a hit does not reorder
    assert len(cache) == 3
    parsed.clear()
    cache("c"), cache("d"), cache("e")
    assert parsed == []                                # the three newest stay
    cache("a"), cache("b")
    assert parsed == ["a", "b"]                        # the oldest went first


def test_steady_state_of_unique_keys_stays_bounded():
    cache, _ = _cache(max_entries=100, max_bytes=100 * 220)
    for i in range(10_000):
        cache(f"key-{i}")
    assert len(cache) <= 100 and cache.cache_bytes() <= 100 * 220
    assert len(cache._order) == len(cache)             # order and table never drift apart


def test_clear_empties_both():
    cache, parsed = _cache()
    cache("a")
    cache.cache_clear()
    assert len(cache) == 0 and cache.cache_bytes() == 0
    cache("a")
    assert parsed == ["a", "a"]
