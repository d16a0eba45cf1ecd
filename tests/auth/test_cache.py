"""The TTL/LRU cache and the replay guard."""

from __future__ import annotations

import pytest

from auth.cache import ReplayCacheFull, SeenIds, TtlCache


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


def test_seen_ids_refuse_a_second_use_until_expiry() -> None:
    seen = SeenIds(10)
    assert seen.first_use("a", expires=100, now=0)
    assert not seen.first_use("a", expires=200, now=50)
    assert not seen.first_use("a", expires=200, now=100)  # still live at its expiry
    assert seen.first_use("b", expires=300, now=101)  # the purge drops "a"
    assert len(seen) == 1
    assert seen.first_use("a", expires=400, now=101)


def test_seen_ids_never_evict_a_live_id() -> None:
    seen = SeenIds(2)
    assert seen.first_use("a", expires=100, now=0)
    assert seen.first_use("b", expires=50, now=0)
    with pytest.raises(ReplayCacheFull):
        seen.first_use("c", expires=100, now=10)
    assert not seen.first_use("a", expires=100, now=10)  # "a" was not pushed out
    assert seen.first_use("c", expires=100, now=60)  # "b" expired: its slot is free
    with pytest.raises(ValueError):
        SeenIds(0)
