"""Volume creates under an Idempotency-Key across processes (``core.idempotency``, scope volumes).

Within one agent the volume lock serialises creates; two agent processes on
one database meet at the key's unique row instead: the second insert stores
nothing and answers with the volume the first one made.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from core.db import create_tables, make_engine
from core.idempotency import IdempotencyKeyReused
from site_agent.volumes.models import Volume
from site_agent.volumes.repository import VolumeRepository


@pytest.fixture
def repo(database_url: str) -> Iterator[VolumeRepository]:
    engine: Engine = make_engine(database_url)
    create_tables(engine)
    yield VolumeRepository(engine)
    engine.dispose()


def volume(owner: str = "alice") -> Volume:
    return Volume(id=str(uuid.uuid4()), owner=owner, size_gib=1)


def test_a_second_process_with_the_same_key_gets_the_first_volume(repo: VolumeRepository) -> None:
    first = repo.insert(volume(), "retry-1", "digest-a")
    assert repo.find_idempotent("alice", "retry-1", "digest-a") == first.id
    twin = volume()
    stored = repo.insert(twin, "retry-1", "digest-a")  # another process lost the race
    assert stored.id == first.id
    assert repo.get(twin.id) is None  # nothing of the loser was stored
    with pytest.raises(IdempotencyKeyReused):
        repo.insert(volume(), "retry-1", "digest-b")
    with pytest.raises(IdempotencyKeyReused):
        repo.find_idempotent("alice", "retry-1", "digest-b")
    # Keys are per owner: bob's "retry-1" is another key.
    assert repo.find_idempotent("bob", "retry-1", "digest-a") is None
    assert repo.insert(volume("bob"), "retry-1", "digest-a").owner == "bob"
    assert len(repo.list_volumes(None)) == 2
