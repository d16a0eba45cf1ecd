"""The TTL/LRU cache."""

from __future__ import annotations

from auth.cache import TtlCache


def test_entries_expire_and_lru_evicts() -> None:
    cache: TtlCache[str, int] = TtlCache(2)
    cache.put("a", 1, expires=10)
    cache.put("b", 2, expires=10)
    assert cache.get("a", now=5) == 1  # "a" is now the most recent
    cache.put("c", 3, expires=10)  # evicts "b"
    assert cache.get("b", now=5) is None
    assert cache.get("a", now=10) is None  # expired at 10
    assert len(cache) == 1
    cache.pop("c")
    cache.pop("c")
    assert len(cache) == 0


def test_size_zero_disables() -> None:
    cache: TtlCache[str, int] = TtlCache(0)
    cache.put("a", 1, expires=10)
    assert cache.get("a", now=0) is None
