"""A small size-bounded LRU cache whose entries expire at a given (monotonic) time."""

from __future__ import annotations

from collections import OrderedDict
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
