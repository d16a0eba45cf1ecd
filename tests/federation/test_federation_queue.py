"""The deferred queue: priority then FIFO, backfill or strict, deadlines expire clearly."""

from __future__ import annotations

import pytest

from federation.errors import QueueError
from federation.model import PlacementRequest
from federation.queue import DeferredQueue, QueuedRequest, QueueState

REQ = PlacementRequest(vcpus=1, memory_mib=512, image="debian-12")


def item(id_: str, priority: int = 0, deadline: float | None = None) -> QueuedRequest:
    return QueuedRequest(id=id_, request=REQ, priority=priority, deadline=deadline)


def queue(*items: QueuedRequest) -> DeferredQueue:
    q = DeferredQueue(clock=lambda: 1000.0)
    for it in items:
        q.push(it)
    return q


def test_priority_then_fifo_order() -> None:
    q = queue(item("a"), item("b", 5), item("c"), item("d", 5), item("e", -1))
    assert [i.id for i in q] == ["b", "d", "a", "c", "e"]
    assert q.position("a") == 3
    started = q.pop_ready(lambda i: True)
    assert [i.id for i in started] == ["b", "d", "a", "c", "e"]
    assert all(i.state is QueueState.STARTED for i in started)
    assert len(q) == 0


def test_backfill_lets_small_requests_pass_a_blocked_one() -> None:
    q = queue(item("big", 9), item("small-1"), item("small-2"))
    started = q.pop_ready(lambda i: i.id != "big")
    assert [i.id for i in started] == ["small-1", "small-2"]
    assert [i.id for i in q] == ["big"]


def test_strict_order_stops_at_the_first_that_cannot_start() -> None:
    q = queue(item("first"), item("blocked"), item("later"))
    started = q.pop_ready(lambda i: i.id != "blocked", backfill=False)
    assert [i.id for i in started] == ["first"]
    assert [i.id for i in q] == ["blocked", "later"]


def test_can_place_is_asked_in_order_and_limit_is_honoured() -> None:
    q = queue(item("a"), item("b", 1), item("c"))
    asked: list[str] = []

    def can_place(i: QueuedRequest) -> bool:
        asked.append(i.id)
        return True

    assert [i.id for i in q.pop_ready(can_place, limit=2)] == ["b", "a"]
    assert asked == ["b", "a"]
    assert [i.id for i in q] == ["c"]


def test_deadline_expiry_gives_a_clear_state_and_reason() -> None:
    q = queue(item("soon", deadline=1010.0), item("later", deadline=5000.0), item("never"))
    assert q.expire(now=1010.0) == []  # at the deadline it still waits
    expired = q.expire(now=1011.0)
    assert [i.id for i in expired] == ["soon"]
    assert expired[0].state is QueueState.EXPIRED
    assert expired[0].reason == (
        "deadline 1970-01-01T00:16:50+00:00 passed before capacity freed (waited 11s)"
    )
    assert [i.id for i in q] == ["later", "never"]


def test_pop_ready_never_starts_an_expired_request_and_leaves_it_for_expire() -> None:
    q = queue(item("old", 9, deadline=1005.0), item("fresh"))
    started = q.pop_ready(lambda i: True, now=2000.0)
    assert [i.id for i in started] == ["fresh"]
    assert [i.id for i in q] == ["old"]
    assert [i.id for i in q.expire(now=2000.0)] == ["old"]


def test_cancel_and_errors() -> None:
    q = queue(item("a"))
    with pytest.raises(QueueError, match="already queued"):
        q.push(item("a"))
    cancelled = q.cancel("a")
    assert cancelled.state is QueueState.CANCELLED
    assert "a" not in q
    with pytest.raises(QueueError, match="no waiting request"):
        q.cancel("a")
    with pytest.raises(QueueError, match="not waiting"):
        q.push(cancelled)


def test_load_rebuilds_order_from_stored_rows() -> None:
    q = queue(item("a"), item("b"), item("c", 1))
    rows = list(q)
    finished = item("done")
    finished.state = QueueState.STARTED
    restored = DeferredQueue.load([rows[2], rows[0], finished, rows[1]], clock=lambda: 1.0)
    assert [i.id for i in restored] == ["c", "a", "b"]
    new = restored.push(item("d"))
    assert new.seq == 3  # FIFO continues after the stored rows
    assert new.enqueued_at == 1.0
