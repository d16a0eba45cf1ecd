"""The broker's VM tables on SQLite and PostgreSQL: idempotency races, events, the queue
(with the user a queued VM is made for), the burst budget."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine

from broker.sites.models import ProviderKind
from broker.vms.models import BrokerVm, QueueRecord
from broker.vms.store import VmStore
from core.db import create_tables, make_engine, utcnow
from core.idempotency import IdempotencyKeyReused, request_hash


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    create_tables(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> VmStore:
    return VmStore(engine)


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


def test_a_key_is_stored_once_even_when_two_requests_race(store: VmStore) -> None:
    digest = request_hash({"image": "tiny"})
    owner = {"owner": "alice", "key": "k1", "digest": digest}
    assert store.insert([vm("a")], "accepted", **owner) is None
    # The second request missed the key in its first look-up, then lost the insert.
    assert store.insert([vm("b")], "accepted", **owner) == ["a"]
    assert store.get("b") is None, "the losing request stored nothing"
    assert store.earlier("alice", "k1", digest) == ["a"]
    assert store.earlier("bob", "k1", digest) is None
    with pytest.raises(IdempotencyKeyReused):
        store.earlier("alice", "k1", request_hash({"image": "other"}))
    store.forget_request(["a"], "alice", "k1")
    assert store.get("a") is None and store.earlier("alice", "k1", digest) is None


def test_state_changes_are_logged_unless_the_provider_logs_them(store: VmStore) -> None:
    store.insert([vm("a")], "accepted", owner="alice", key=None, digest="")
    store.update("a", reason="placed", site="s1", state="prolog")
    store.update("a", reason="reported", log_state=False, state="running")
    store.update("a", ready=True)  # no state change, no event
    events = [(e.from_state, e.to_state, e.reason) for e in store.events("a")]
    assert events == [(None, "pending", "accepted"), ("pending", "prolog", "placed")]
    row = store.get("a")
    assert row is not None and row.state == "running" and row.ready and row.site == "s1"
    assert store.on_site("s1") == ["a"] and store.active_counts() == {"s1": 1}
    store.update("a", state="done")
    assert store.on_site("s1") == [] and store.list_vms("alice", include_done=False) == []


def test_site_ids_are_translated_only_for_the_site_they_belong_to(store: VmStore) -> None:
    store.insert(
        [vm("a", site="s1", site_vm_id="x"), vm("b", site="s2", site_vm_id="x")],
        "accepted",
        owner="alice",
        key=None,
        digest="",
    )
    assert {k: v.id for k, v in store.refs_at("s1", ["x", "y"]).items()} == {"x": "a"}
    assert store.known_site_ids("s2") == {"x"}


def test_burst_spending_counts_cloud_vms_of_the_period(store: VmStore) -> None:
    old = utcnow() - timedelta(days=40)
    store.insert(
        [
            vm("c1", kind=ProviderKind.CLOUD.value, estimated_cost=1.5),
            vm("c2", kind=ProviderKind.CLOUD.value, estimated_cost=2.0, created_at=old),
            vm("s1", kind=ProviderKind.SITE.value, estimated_cost=9.0),
        ],
        "accepted",
        owner="alice",
        key=None,
        digest="",
    )
    assert store.burst_spent(utcnow() - timedelta(days=30)) == pytest.approx(1.5)


def test_queue_rows_keep_the_user_they_are_made_for(store: VmStore) -> None:
    user = {"account": "alice", "identity": "federated:b:alice", "method": "token"}
    store.save_queue(
        QueueRecord(id="q1", priority=2, seq=0, enqueued_at=1.0, request={"x": 1}, user=user)
    )
    store.save_queue(QueueRecord(id="q2", seq=1, enqueued_at=2.0, deadline=5.0, user=user))
    store.set_queue_state("q1", "started", "capacity available")
    assert [(r.id, r.deadline, r.user) for r in store.waiting()] == [("q2", 5.0, user)]
