"""core.idempotency: one key table for every create, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from core import idempotency
from core.db import create_tables, make_engine, session_scope
from core.idempotency import IdempotencyKeyReused, request_hash


def test_request_hash_is_stable_and_tells_bodies_apart() -> None:
    assert request_hash({"a": 1, "b": [1, 2]}) == request_hash({"b": [1, 2], "a": 1})
    assert request_hash({"a": 1}) != request_hash({"a": 2})


def test_find_remember_and_reuse(database_url: str) -> None:
    engine = make_engine(database_url)
    create_tables(engine)
    digest = request_hash({"image": "busybox"})
    with session_scope(engine) as session:
        assert idempotency.find(session, "alice", "vms", "k1", digest) is None
        idempotency.remember(session, "alice", "vms", "k1", digest, ["vm-1", "vm-2"])
    with session_scope(engine) as session:
        assert idempotency.find(session, "alice", "vms", "k1", digest) == ["vm-1", "vm-2"]
        # Same key, another owner or another kind of resource: a different record.
        assert idempotency.find(session, "bob", "vms", "k1", digest) is None
        assert idempotency.find(session, "alice", "volumes", "k1", digest) is None
        with pytest.raises(IdempotencyKeyReused) as caught:
            idempotency.find(session, "alice", "vms", "k1", request_hash({"image": "x"}))
    assert caught.value.status == 409
    assert caught.value.code == "idempotency_key_reused"
    engine.dispose()


def test_a_concurrent_twin_fails_on_the_unique_key(database_url: str) -> None:
    """Two first requests with one key: both miss in find; the second remember loses."""
    engine = make_engine(database_url)
    create_tables(engine)
    digest = request_hash({"size_gib": 1})
    with session_scope(engine) as first, session_scope(engine) as second:
        assert idempotency.find(first, "alice", "volumes", "k", digest) is None
        assert idempotency.find(second, "alice", "volumes", "k", digest) is None
        idempotency.remember(first, "alice", "volumes", "k", digest, ["vol-1"])
        first.commit()
        with pytest.raises(IntegrityError):
            idempotency.remember(second, "alice", "volumes", "k", digest, ["vol-2"])
        second.rollback()
    with session_scope(engine) as session:
        assert idempotency.find(session, "alice", "volumes", "k", digest) == ["vol-1"]
    engine.dispose()


def test_forget_lets_a_failed_create_be_retried(database_url: str) -> None:
    engine = make_engine(database_url)
    create_tables(engine)
    digest = request_hash({})
    with session_scope(engine) as session:
        idempotency.remember(session, "alice", "vms", "k", digest, ["vm-1"])
    with session_scope(engine) as session:
        idempotency.forget(session, "alice", "vms", "k")
    with session_scope(engine) as session:
        assert idempotency.find(session, "alice", "vms", "k", digest) is None
    engine.dispose()
