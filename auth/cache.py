"""Small bounded caches: an LRU whose entries expire, and a set of one-use ids (replay guard)."""

from __future__ import annotations

import heapq
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """At most ``max_size`` entries; the least recently used goes first. Not thread-safe.

    Meant for the event-loop thread: ``get`` and ``put`` never block.
    ``max_size = 0`` disables caching.
    """

    def __init__(self, max_size: int) -> None:
        self._max = max_size
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K, now: float) -> V | None:
        """The live value for ``key``, or None (an expired entry is dropped)."""
        entry = self._data.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= now:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V, expires: float) -> None:
        """Store ``value`` until ``expires``."""
        if self._max <= 0:
            return
        self._data[key] = (expires, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def pop(self, key: K) -> None:
        """Forget ``key`` (no error if absent)."""
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class ReplayCacheFull(Exception):
    """Every slot of a :class:`SeenIds` holds an id that has not expired yet."""


class SeenIds:
    """One-use ids (JWT ``jti``) remembered until they expire, at most ``max_size`` at once.

    :meth:`first_use` records an id and says whether it was new. An id is
    never forgotten before its expiry, not even under pressure: when every
    slot holds a live id the cache refuses new ones (:class:`ReplayCacheFull`)
    rather than evicting one that could then be replayed. Expired ids are
    purged (oldest expiry first) on every call. Thread-safe; each call takes
    a short lock and never blocks otherwise.
    """

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError("a replay cache needs at least one slot")
        self._max = max_size
        self._expiry: dict[Hashable, float] = {}
        self._heap: list[tuple[float, int, Hashable]] = []
        self._counter = 0
        self._lock = threading.Lock()

    def first_use(self, key: Hashable, expires: float, now: float) -> bool:
        """Record ``key`` until ``expires``; False if it is already recorded (a replay)."""
        with self._lock:
            self._purge(now)
            if key in self._expiry:
                return False
            if len(self._expiry) >= self._max:
                raise ReplayCacheFull(f"{self._max} one-use ids are live")
            self._expiry[key] = expires
            self._counter += 1
            heapq.heappush(self._heap, (expires, self._counter, key))
            return True

    def _purge(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] < now:
            _, _, key = heapq.heappop(heap)
            self._expiry.pop(key, None)

    def __len__(self) -> int:
        return len(self._expiry)
