"""``Idempotency-Key``: the one implementation every create endpoint uses.

A create repeated with the same key by the same account, for the same kind
of resource (``scope``: ``"vms"``, ``"volumes"``...), returns what the first
request made and makes nothing new; the same key with a different body is
``409 idempotency_key_reused``.

How a service uses it, inside the transaction that stores the resources::

    key = idempotency_key(request)               # header, validated
    digest = request_hash(body.model_dump(mode="json"))
    with session_scope(engine) as session:
        earlier = find(session, owner, "vms", key, digest)   # None, ids, or 409
        if earlier is None:
            session.add_all(new_rows)
            remember(session, owner, "vms", key, digest, [r.id for r in new_rows])

Two concurrent first requests with the same key both miss in ``find``; the
unique constraint on ``(owner, scope, key)`` makes the second commit fail
with :class:`sqlalchemy.exc.IntegrityError`, and the loser answers with the
winner's resources (call ``find`` again). Nothing is made twice.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, Session, SQLModel, select

from core.db import UTCDateTime, utcnow
from core.errors import BadRequest, Conflict

HEADER = "Idempotency-Key"
_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class IdempotencyKeyReused(Conflict):
    """The key was used before by the same account with a different request body."""

    code = "idempotency_key_reused"

    def __init__(self, key: str) -> None:
        super().__init__(f"{HEADER} {key!r} was already used with a different request body")
        self.key = key


class IdempotencyRecord(SQLModel, table=True):
    """A create seen with an ``Idempotency-Key``: the ids it made, and the body's digest."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("owner", "scope", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    owner: str
    scope: str
    key: str
    request_hash: str
    resource_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


def idempotency_key(request: web.Request) -> str | None:
    """The request's ``Idempotency-Key``, if any; ``BadRequest`` when malformed."""
    key = request.headers.get(HEADER)
    if key is not None and not _KEY.match(key):
        raise BadRequest(f"{HEADER} must be 1-128 characters of [A-Za-z0-9._:-]")
    return key


def request_hash(body: dict[str, Any]) -> str:
    """A stable digest of a create request's body (keys sorted), to recognise retries."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def find(session: Session, owner: str, scope: str, key: str, digest: str) -> list[str] | None:
    """The ids made earlier under ``key``, or None if the key is new.

    Raises :class:`IdempotencyKeyReused` when the key came with another body.
    """
    record = session.exec(
        select(IdempotencyRecord).where(
            IdempotencyRecord.owner == owner,
            IdempotencyRecord.scope == scope,
            IdempotencyRecord.key == key,
        )
    ).first()
    if record is None:
        return None
    if record.request_hash != digest:
        raise IdempotencyKeyReused(key)
    return list(record.resource_ids)


def remember(
    session: Session, owner: str, scope: str, key: str, digest: str, ids: Sequence[str]
) -> None:
    """Record that ``key`` made ``ids`` (flushed now, so a concurrent twin fails here)."""
    session.add(
        IdempotencyRecord(
            owner=owner, scope=scope, key=key, request_hash=digest, resource_ids=list(ids)
        )
    )
    session.flush()


def forget(session: Session, owner: str, scope: str, key: str) -> None:
    """Drop a key whose create failed as a whole (a retry may then try again)."""
    record = session.exec(
        select(IdempotencyRecord).where(
            IdempotencyRecord.owner == owner,
            IdempotencyRecord.scope == scope,
            IdempotencyRecord.key == key,
        )
    ).first()
    if record is not None:
        session.delete(record)
