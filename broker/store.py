"""The broker's database: VMs and their events, sites, the queue, idempotency keys.

Plain synchronous functions over one SQLAlchemy engine (SQLite or
PostgreSQL); the service runs them in threads.  Tables are the ``broker_*``
ones of :mod:`broker.models`; nothing here reads another service's tables.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, select

from broker.models import (
    BrokerIdempotency,
    BrokerVm,
    BrokerVmEvent,
    BrokerVmState,
    QueueRecord,
    SiteRecord,
    VmKind,
)
from core.db import session_scope, utcnow

_FINAL = (BrokerVmState.DONE.value, BrokerVmState.EXPIRED.value)


def request_hash(body: dict[str, Any]) -> str:
    """A stable digest of a create body (to tell a retry from a different request)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class IdempotencyConflict(Exception):
    """The key was used before by the same owner with a different body."""


class BrokerStore:
    """Every read and write of the broker's tables."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- VMs ------------------------------------------------------------------

    def insert_vms(
        self, vms: Sequence[BrokerVm], reason: str, record: BrokerIdempotency | None
    ) -> bool:
        """Store new VMs (each with a first event) and the idempotency record, atomically.

        Returns False, storing nothing, when a concurrent request already
        stored the same (owner, key).
        """
        try:
            with session_scope(self.engine) as session:
                if record is not None:
                    session.add(record)
                    session.flush()
                for vm in vms:
                    session.add(vm)
                session.flush()
                for vm in vms:
                    session.add(BrokerVmEvent(vm_id=vm.id, to_state=vm.state, reason=reason))
        except IntegrityError:
            if record is None:
                raise
            return False
        return True

    def find_idempotent(self, owner: str, key: str, digest: str) -> list[str] | None:
        """The VM ids made under ``key`` by ``owner``, or None; ``IdempotencyConflict`` when
        the key was used with another body."""
        with Session(self.engine) as session:
            record = session.exec(
                select(BrokerIdempotency).where(
                    BrokerIdempotency.owner == owner, BrokerIdempotency.key == key
                )
            ).first()
            if record is None:
                return None
            if record.request_hash != digest:
                raise IdempotencyConflict(key)
            return list(record.vm_ids)

    def forget_request(self, vm_ids: Iterable[str], owner: str, key: str | None) -> None:
        """Remove VMs that were never made (a create that failed as a whole) and their key."""
        ids = list(vm_ids)
        with session_scope(self.engine) as session:
            if ids:
                session.exec(delete(BrokerVmEvent).where(col(BrokerVmEvent.vm_id).in_(ids)))
                session.exec(delete(QueueRecord).where(col(QueueRecord.id).in_(ids)))
                session.exec(delete(BrokerVm).where(col(BrokerVm.id).in_(ids)))
            if key is not None:
                session.exec(
                    delete(BrokerIdempotency).where(
                        col(BrokerIdempotency.owner) == owner, col(BrokerIdempotency.key) == key
                    )
                )

    def get(self, vm_id: str) -> BrokerVm | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(BrokerVm, vm_id)

    def get_many(self, vm_ids: Sequence[str]) -> list[BrokerVm]:
        with Session(self.engine, expire_on_commit=False) as session:
            rows = session.exec(select(BrokerVm).where(col(BrokerVm.id).in_(list(vm_ids)))).all()
        order = {vm_id: i for i, vm_id in enumerate(vm_ids)}
        return sorted(rows, key=lambda r: order[r.id])

    def list_vms(self, owner: str | None, *, include_done: bool = True) -> list[BrokerVm]:
        """VMs of ``owner`` (None: everyone's), newest first."""
        with Session(self.engine, expire_on_commit=False) as session:
            query = select(BrokerVm)
            if owner is not None:
                query = query.where(BrokerVm.owner == owner)
            if not include_done:
                query = query.where(col(BrokerVm.state).not_in([*_FINAL, "failed"]))
            return list(session.exec(query.order_by(col(BrokerVm.created_at).desc())).all())

    def on_site(self, site: str, *, active_only: bool = True) -> list[BrokerVm]:
        """The VMs placed at ``site`` (not done, unless ``active_only`` is False)."""
        with Session(self.engine, expire_on_commit=False) as session:
            query = select(BrokerVm).where(BrokerVm.site == site)
            if active_only:
                query = query.where(col(BrokerVm.state).not_in(_FINAL))
            return list(session.exec(query).all())

    def known_site_ids(self, site: str) -> set[str]:
        """Every site VM id the broker ever recorded at ``site`` (for the orphan sweep)."""
        with Session(self.engine) as session:
            ids = session.exec(
                select(BrokerVm.site_vm_id).where(
                    BrokerVm.site == site, col(BrokerVm.site_vm_id).is_not(None)
                )
            ).all()
        return {i for i in ids if i is not None}

    def update(
        self,
        vm_id: str,
        *,
        reason: str | None = None,
        event_site: str | None = None,
        log_state: bool = True,
        **fields: Any,
    ) -> BrokerVm:
        """Change fields of a VM; a change of ``state`` writes an event with ``reason``
        (logged as coming from ``event_site``), unless ``log_state`` is False (the
        site logs that change itself)."""
        with session_scope(self.engine) as session:
            vm = session.get(BrokerVm, vm_id)
            if vm is None:
                raise KeyError(vm_id)
            before = vm.state
            changed = False
            for key, value in fields.items():
                if getattr(vm, key) != value:
                    setattr(vm, key, value)
                    changed = True
            if changed:
                vm.updated_at = utcnow()
                session.add(vm)
            if vm.state != before and log_state:
                session.add(
                    BrokerVmEvent(
                        vm_id=vm_id,
                        site=event_site,
                        from_state=before,
                        to_state=vm.state,
                        reason=reason or "state reported by the site",
                    )
                )
            session.flush()
            session.refresh(vm)
            return vm

    def add_event(
        self,
        vm_id: str,
        reason: str,
        *,
        site: str | None = None,
        from_state: str | None = None,
        to_state: str | None = None,
    ) -> None:
        with session_scope(self.engine) as session:
            session.add(
                BrokerVmEvent(
                    vm_id=vm_id,
                    site=site,
                    from_state=from_state,
                    to_state=to_state,
                    reason=reason,
                )
            )

    def add_events(self, vm_ids: Iterable[str], reason: str, *, site: str | None = None) -> None:
        with session_scope(self.engine) as session:
            for vm_id in vm_ids:
                session.add(BrokerVmEvent(vm_id=vm_id, site=site, reason=reason))

    def events(self, vm_id: str) -> list[BrokerVmEvent]:
        with Session(self.engine, expire_on_commit=False) as session:
            return list(
                session.exec(
                    select(BrokerVmEvent)
                    .where(BrokerVmEvent.vm_id == vm_id)
                    .order_by(col(BrokerVmEvent.at), col(BrokerVmEvent.id))
                ).all()
            )

    def burst_spent(self, since: datetime) -> float:
        """Estimated cost of the VMs burst to public clouds since ``since``."""
        with Session(self.engine) as session:
            total = session.exec(
                select(func.coalesce(func.sum(BrokerVm.estimated_cost), 0.0)).where(
                    BrokerVm.kind == VmKind.CLOUD.value, col(BrokerVm.created_at) >= since
                )
            ).one()
        return float(total or 0.0)

    def active_counts(self) -> dict[str, int]:
        """Number of VMs not done per site or cloud."""
        with Session(self.engine) as session:
            rows = session.exec(
                select(BrokerVm.site, func.count())
                .where(col(BrokerVm.site).is_not(None), col(BrokerVm.state).not_in(_FINAL))
                .group_by(BrokerVm.site)
            ).all()
        return {site: int(n) for site, n in rows if site is not None}

    # --- sites ----------------------------------------------------------------

    def save_heartbeat(
        self, name: str, dn: str, url: str, report: dict[str, Any], at: datetime
    ) -> bool:
        """Record a site's heartbeat; True when this one registered the site."""
        with session_scope(self.engine) as session:
            record = session.get(SiteRecord, name)
            registered = record is None
            if record is None:
                record = SiteRecord(name=name, dn=dn, registered_at=at)
            record.dn = dn
            record.url = url
            record.report = report
            record.last_heartbeat = at
            record.heartbeats += 1
            session.add(record)
        return registered

    def sites(self) -> list[SiteRecord]:
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.exec(select(SiteRecord).order_by(col(SiteRecord.name))).all())

    # --- queue ----------------------------------------------------------------

    def save_queue(self, record: QueueRecord) -> None:
        with session_scope(self.engine) as session:
            session.merge(record)

    def set_queue_state(self, vm_id: str, state: str, reason: str | None) -> None:
        with session_scope(self.engine) as session:
            record = session.get(QueueRecord, vm_id)
            if record is not None:
                record.state = state
                record.reason = reason
                session.add(record)

    def waiting(self) -> list[QueueRecord]:
        with Session(self.engine, expire_on_commit=False) as session:
            return list(
                session.exec(
                    select(QueueRecord)
                    .where(QueueRecord.state == "waiting")
                    .order_by(col(QueueRecord.seq))
                ).all()
            )
