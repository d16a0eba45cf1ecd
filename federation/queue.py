"""The deferred-request queue: requests that wait for federation capacity.

A request goes here when it asks to wait, or when the burst policy sends it
(``when_denied=queue``).  The queue is pure in-memory ordering logic; the
broker persists :class:`QueuedRequest` rows itself and rebuilds the queue
with :meth:`DeferredQueue.load` after a restart.

Semantics:

* **Order**: higher ``priority`` first; equal priorities in arrival order
  (FIFO by ``seq``, a counter assigned by :meth:`DeferredQueue.push`).
* **Start**: :meth:`DeferredQueue.pop_ready` walks the waiting requests in
  that order and starts every one for which ``can_place(request)`` is True
  (``backfill=True``, the default: a big request that does not fit yet does
  not block smaller ones behind it), or stops at the first that cannot
  (``backfill=False``: strict order, nothing overtakes).  ``can_place`` is
  called in order, so it can reserve capacity as it goes.
* **Expiry**: a request whose ``deadline`` has passed (``now > deadline``) is
  never started; :meth:`DeferredQueue.expire` takes it out in state
  ``expired`` with a reason naming the deadline (the broker calls it
  periodically and records the reason in the VM's events).
* States: ``waiting`` -> ``started`` | ``expired`` | ``cancelled``; only
  waiting requests are in the queue.
"""

from __future__ import annotations

import time
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from federation.errors import QueueError
from federation.model import PlacementRequest


class QueueState(StrEnum):
    WAITING = "waiting"
    STARTED = "started"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


@dataclass
class QueuedRequest:
    """One deferred request, as the broker stores it.

    ``id`` is the broker's (usually the VM id); ``payload`` whatever else the
    broker needs to start it later.  ``enqueued_at`` and ``deadline`` are
    seconds since the epoch (``deadline=None``: waits forever).  ``seq`` is
    assigned by :meth:`DeferredQueue.push` and must be stored with the row.
    """

    id: str
    request: PlacementRequest
    priority: int = 0
    enqueued_at: float = 0.0
    deadline: float | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    seq: int = -1
    state: QueueState = QueueState.WAITING
    reason: str | None = None

    @property
    def sort_key(self) -> tuple[int, int]:
        return (-self.priority, self.seq)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


class DeferredQueue:
    """Waiting requests in priority-then-FIFO order.  Not thread-safe (one event loop)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._order: list[tuple[int, int, str]] = []  # (-priority, seq, id)
        self._items: dict[str, QueuedRequest] = {}
        self._next_seq = 0

    @classmethod
    def load(
        cls, items: Iterable[QueuedRequest], *, clock: Callable[[], float] = time.time
    ) -> DeferredQueue:
        """Rebuild a queue from stored rows; rows not ``waiting`` are ignored, ``seq`` kept."""
        queue = cls(clock=clock)
        for item in items:
            if item.state is QueueState.WAITING:
                queue.push(item)
        return queue

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._items

    def __iter__(self) -> Iterator[QueuedRequest]:
        """Waiting requests in start order."""
        return iter([self._items[i] for _, _, i in self._order])

    def get(self, request_id: str) -> QueuedRequest:
        try:
            return self._items[request_id]
        except KeyError:
            raise QueueError(f"no waiting request {request_id!r} in the queue") from None

    def position(self, request_id: str) -> int:
        """1-based place of a waiting request in start order."""
        item = self.get(request_id)
        return bisect_left(self._order, (*item.sort_key, item.id)) + 1

    def push(self, item: QueuedRequest) -> QueuedRequest:
        """Add a waiting request; assigns ``seq`` (FIFO order) unless it already has one.

        Raises ``QueueError`` for a duplicate id or an item that is not waiting.
        """
        if item.id in self._items:
            raise QueueError(f"request {item.id!r} is already queued")
        if item.state is not QueueState.WAITING:
            raise QueueError(f"request {item.id!r} is {item.state}, not waiting")
        if item.seq < 0:
            item.seq = self._next_seq
        if not item.enqueued_at:
            item.enqueued_at = self.clock()
        self._next_seq = max(self._next_seq, item.seq + 1)
        self._items[item.id] = item
        insort(self._order, (*item.sort_key, item.id))
        return item

    def _remove(self, item: QueuedRequest) -> None:
        key = (*item.sort_key, item.id)
        i = bisect_left(self._order, key)
        if i < len(self._order) and self._order[i] == key:
            del self._order[i]
        del self._items[item.id]

    def cancel(self, request_id: str, reason: str = "cancelled by the user") -> QueuedRequest:
        """Take a waiting request out of the queue in state ``cancelled``."""
        item = self.get(request_id)
        self._remove(item)
        item.state = QueueState.CANCELLED
        item.reason = reason
        return item

    def expire(self, now: float | None = None) -> list[QueuedRequest]:
        """Remove and return (state ``expired``) the requests whose deadline is before ``now``."""
        now = self.clock() if now is None else now
        expired = [
            item
            for _, _, request_id in self._order
            if (item := self._items[request_id]).deadline is not None and now > item.deadline
        ]
        for item in expired:
            self._remove(item)
            item.state = QueueState.EXPIRED
            assert item.deadline is not None
            item.reason = (
                f"deadline {_iso(item.deadline)} passed before capacity freed "
                f"(waited {now - item.enqueued_at:.0f}s)"
            )
        return expired

    def pop_ready(
        self,
        can_place: Callable[[QueuedRequest], bool],
        *,
        now: float | None = None,
        backfill: bool = True,
        limit: int | None = None,
    ) -> list[QueuedRequest]:
        """Start the requests that can be placed now, in priority-then-FIFO order.

        Requests whose deadline has passed are skipped, never started, and
        stay queued until :meth:`expire` reports them (so the caller learns of
        every expiry).  ``can_place`` is asked in order; with
        ``backfill=False`` the walk stops at the first request it refuses.  At
        most ``limit`` requests are started.  Started requests leave the queue
        in state ``started`` and are returned in start order.
        """
        now = self.clock() if now is None else now
        started: list[QueuedRequest] = []
        for _, _, request_id in list(self._order):
            if limit is not None and len(started) >= limit:
                break
            item = self._items[request_id]
            if item.deadline is not None and now > item.deadline:
                continue
            if can_place(item):
                self._remove(item)
                item.state = QueueState.STARTED
                item.reason = "capacity available"
                started.append(item)
            elif not backfill:
                break
        return started
