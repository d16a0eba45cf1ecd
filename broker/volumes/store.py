"""The ``broker_volumes`` table and the volumes' idempotency records (scope ``volumes``).

Rows go to :mod:`broker.volumes.service` only; other parts of the broker
get :class:`VolumeRef` values.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, select

from broker.volumes.models import BrokerVolume
from core import idempotency
from core.db import session_scope, utcnow

SCOPE = "volumes"


@dataclass(frozen=True)
class VolumeRef:
    """What other parts of the broker may know of a volume: owner and place."""

    id: str
    owner: str
    site: str
    site_volume_id: str | None


class VolumeStore:
    """Reads and writes of ``broker_volumes``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def earlier(self, owner: str, key: str, digest: str) -> str | None:
        """The volume made under ``key`` by ``owner``, or None (``IdempotencyKeyReused``
        when the key came with another body)."""
        with Session(self.engine) as session:
            ids = idempotency.find(session, owner, SCOPE, key, digest)
        return ids[0] if ids else None

    def reserve(self, row: BrokerVolume, *, key: str | None, digest: str) -> str | None:
        """Store a volume about to be created at its site, with its key, atomically.

        Returns None when stored; when a concurrent request stored the same
        (owner, key) first, stores nothing and returns that request's volume id.
        """
        try:
            with session_scope(self.engine) as session:
                if key is not None:
                    idempotency.remember(session, row.owner, SCOPE, key, digest, [row.id])
                session.add(row)
        except IntegrityError:
            if key is None:
                raise
            return self.earlier(row.owner, key, digest)
        return None

    def made(self, volume_id: str, site_volume_id: str, shape: dict[str, Any]) -> BrokerVolume:
        """The site made the volume: remember its id there and how it showed it."""
        with session_scope(self.engine) as session:
            row = session.get(BrokerVolume, volume_id)
            if row is None:
                raise KeyError(volume_id)
            row.site_volume_id = site_volume_id
            row.last = shape
            row.updated_at = utcnow()
            session.add(row)
            session.flush()
            session.refresh(row)
            return row

    def forget(self, volume_id: str, owner: str, key: str | None) -> None:
        """Remove a volume whose create failed as a whole, and its key."""
        with session_scope(self.engine) as session:
            session.exec(delete(BrokerVolume).where(col(BrokerVolume.id) == volume_id))
            if key is not None:
                idempotency.forget(session, owner, SCOPE, key)

    def get(self, volume_id: str) -> BrokerVolume | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(BrokerVolume, volume_id)

    def owned(self, owner: str | None) -> list[BrokerVolume]:
        """Volumes of ``owner`` (None: everyone's), newest first."""
        with Session(self.engine, expire_on_commit=False) as session:
            query = select(BrokerVolume)
            if owner is not None:
                query = query.where(BrokerVolume.owner == owner)
            return list(session.exec(query.order_by(col(BrokerVolume.created_at).desc())).all())

    def save_last(self, shapes: dict[str, dict[str, Any]]) -> None:
        """Remember how the site showed each volume (broker id -> site shape)."""
        with session_scope(self.engine) as session:
            for volume_id, shape in shapes.items():
                row = session.get(BrokerVolume, volume_id)
                if row is not None and row.last != shape:
                    row.last = shape
                    row.updated_at = utcnow()
                    session.add(row)

    def remove(self, volume_id: str) -> None:
        with session_scope(self.engine) as session:
            session.exec(delete(BrokerVolume).where(col(BrokerVolume.id) == volume_id))

    def refs(self, volume_ids: Iterable[str]) -> dict[str, VolumeRef]:
        """Broker volume id -> its owner and place, for the ids the broker knows."""
        ids = list(volume_ids)
        if not ids:
            return {}
        with Session(self.engine) as session:
            rows = session.exec(select(BrokerVolume).where(col(BrokerVolume.id).in_(ids))).all()
            return {r.id: VolumeRef(r.id, r.owner, r.site, r.site_volume_id) for r in rows}

    def broker_ids(self, site: str, site_volume_ids: Iterable[str]) -> dict[str, str]:
        """Site volume id -> broker volume id, for those of ``site_volume_ids`` it knows."""
        ids = list(site_volume_ids)
        if not ids:
            return {}
        with Session(self.engine) as session:
            rows = session.exec(
                select(BrokerVolume.site_volume_id, BrokerVolume.id).where(
                    BrokerVolume.site == site, col(BrokerVolume.site_volume_id).in_(ids)
                )
            ).all()
        return {site_id: broker_id for site_id, broker_id in rows if site_id is not None}

    def known_site_ids(self, site: str) -> set[str]:
        """Every site volume id the broker holds at ``site`` (for the orphan sweep)."""
        with Session(self.engine) as session:
            ids = session.exec(
                select(BrokerVolume.site_volume_id).where(
                    BrokerVolume.site == site, col(BrokerVolume.site_volume_id).is_not(None)
                )
            ).all()
        return {i for i in ids if i is not None}
