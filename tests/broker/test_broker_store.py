"""The broker's database on SQLite and PostgreSQL: idempotency races, events, queue, budget."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine

from broker.models import BrokerIdempotency, BrokerVm, QueueRecord, VmKind
from broker.store import BrokerStore, IdempotencyConflict, request_hash
from core.db import create_tables, make_engine, utcnow


@pytest.fixture
def store(database_url: str) -> Iterator[BrokerStore]:
    engine: Engine = make_engine(database_url)
    create_tables(engine)
    yield BrokerStore(engine)
    engine.dispose()


def vm(vm_id: str, **fields: object) -> BrokerVm:
    values: dict[str, object] = {
        "id": vm_id,
        "owner": "alice",
        "name": vm_id,
        "image": "tiny",
        "vcpus": 1,
        "memory_mib": 512,
    }
    values.update(fields)
    return BrokerVm.model_validate(values)


def test_a_key_is_stored_once_even_when_two_requests_race(store: BrokerStore) -> None:
    digest = request_hash({"image": "tiny"})
    first = BrokerIdempotency(owner="alice", key="k1", request_hash=digest, vm_ids=["a"])
    second = BrokerIdempotency(owner="alice", key="k1", request_hash=digest, vm_ids=["b"])
    assert store.insert_vms([vm("a")], "accepted", first) is True
    assert store.insert_vms([vm("b")], "accepted", second) is False
    assert store.get("b") is None, "the losing request stored nothing"
    assert store.find_idempotent("alice", "k1", digest) == ["a"]
    assert store.find_idempotent("bob", "k1", digest) is None
    with pytest.raises(IdempotencyConflict):
        store.find_idempotent("alice", "k1", request_hash({"image": "other"}))
    store.forget_request(["a"], "alice", "k1")
    assert store.get("a") is None and store.find_idempotent("alice", "k1", digest) is None


def test_state_changes_are_logged_unless_the_site_logs_them(store: BrokerStore) -> None:
    store.insert_vms([vm("a")], "accepted", None)
    store.update("a", reason="placed", site="s1", state="prolog")
    store.update("a", reason="reported", log_state=False, state="running")
    store.update("a", ready=True)  # no state change, no event
    events = [(e.from_state, e.to_state, e.reason) for e in store.events("a")]
    assert events == [(None, "pending", "accepted"), ("pending", "prolog", "placed")]
    row = store.get("a")
    assert row is not None and row.state == "running" and row.ready and row.site == "s1"
    assert store.on_site("s1")[0].id == "a" and store.active_counts() == {"s1": 1}
    store.update("a", state="done")
    assert store.on_site("s1") == [] and store.list_vms("alice", include_done=False) == []


def test_burst_spending_counts_cloud_vms_of_the_period(store: BrokerStore) -> None:
    old = utcnow() - timedelta(days=40)
    store.insert_vms(
        [
            vm("c1", kind=VmKind.CLOUD.value, estimated_cost=1.5),
            vm("c2", kind=VmKind.CLOUD.value, estimated_cost=2.0, created_at=old),
            vm("s1", kind=VmKind.SITE.value, estimated_cost=9.0),
        ],
        "accepted",
        None,
    )
    assert store.burst_spent(utcnow() - timedelta(days=30)) == pytest.approx(1.5)


def test_queue_rows_round_trip(store: BrokerStore) -> None:
    store.save_queue(QueueRecord(id="q1", priority=2, seq=0, enqueued_at=1.0, request={"x": 1}))
    store.save_queue(QueueRecord(id="q2", seq=1, enqueued_at=2.0, deadline=5.0))
    store.set_queue_state("q1", "started", "capacity available")
    assert [(r.id, r.deadline) for r in store.waiting()] == [("q2", 5.0)]
