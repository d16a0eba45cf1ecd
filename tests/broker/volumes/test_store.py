"""The broker's volume records on SQLite and PostgreSQL: a key reserved once, ids translated."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from broker.volumes.models import BrokerVolume
from broker.volumes.store import VolumeStore
from core.db import create_tables, make_engine
from core.idempotency import IdempotencyKeyReused, request_hash


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    create_tables(engine)
    yield engine
    engine.dispose()


def test_a_volume_key_is_reserved_once_and_the_loser_gets_the_winners_volume(
    engine: Engine,
) -> None:
    volumes = VolumeStore(engine)
    digest = request_hash({"size_gib": 1})
    first = BrokerVolume(id="v1", owner="alice", site="s1", spec={"size_gib": 1})
    second = BrokerVolume(id="v2", owner="alice", site="s1", spec={"size_gib": 1})
    assert volumes.reserve(first, key="k", digest=digest) is None
    assert volumes.reserve(second, key="k", digest=digest) == "v1"
    assert volumes.get("v2") is None
    assert volumes.refs(["v1"])["v1"].site_volume_id is None, "not made at the site yet"
    volumes.made("v1", "site-vol-1", {"id": "site-vol-1"})
    refs = volumes.refs(["v1", "nope"])
    assert list(refs) == ["v1"] and refs["v1"].site_volume_id == "site-vol-1"
    assert volumes.broker_ids("s1", ["site-vol-1", "other"]) == {"site-vol-1": "v1"}
    assert volumes.broker_ids("s2", ["site-vol-1"]) == {}
    assert volumes.known_site_ids("s1") == {"site-vol-1"}
    with pytest.raises(IdempotencyKeyReused):
        volumes.earlier("alice", "k", request_hash({"size_gib": 2}))
    volumes.forget("v1", "alice", "k")
    assert volumes.get("v1") is None and volumes.earlier("alice", "k", digest) is None
