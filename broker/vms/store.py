"""The broker's VM tables: VMs, their events, the deferred queue, idempotency records.

Plain synchronous functions over one SQLAlchemy engine (SQLite or
PostgreSQL); the services run them in threads. Rows are returned to the
services of :mod:`broker.vms` only; other packages get :class:`VmRef`
values, and HTTP handlers only ``*Public`` models.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, select

from broker.sites.models import ProviderKind
from broker.vms.models import BrokerVm, BrokerVmEvent, QueueRecord
from core import idempotency
from core.db import session_scope, utcnow
from core.vm_state import FINAL_STATES, TERMINAL_STATES
from federation.providers.base import ProviderVM

SCOPE = "vms"
_FINAL = [s.value for s in FINAL_STATES]
_TERMINAL = [s.value for s in TERMINAL_STATES]


@dataclass(frozen=True)
class VmRef:
    """What other parts of the broker may know of a VM: its ids, owner and place."""

    id: str
    owner: str
    group: str | None
    site: str | None
    site_vm_id: str | None
    state: str


def _ref(row: BrokerVm) -> VmRef:
    return VmRef(row.id, row.owner, row.group, row.site, row.site_vm_id, row.state)


def provider_fields(vm: ProviderVM) -> dict[str, Any]:
    """The record's fields from a VM as its provider reports it.

    ``extra`` holds what only some providers know (a site's host, pool,
    leased address, MAC, the guest-reported address); it is copied, never
    interpreted.
    """
    extra = vm.extra
    ip = extra.get("ip") if "ip" in extra else (vm.addresses[0] if vm.addresses else None)
    return {
        "state": vm.state.value,
        "state_reason": vm.state_reason,
        "ready": vm.ready,
        "addresses": list(vm.addresses),
        "ip": ip,
        "host": extra.get("host"),
        "network": extra.get("network"),
        "address": extra.get("address"),
        "mac": extra.get("mac"),
        "via": extra.get("via"),
    }


class VmStore:
    """Every read and write of the broker's VM tables."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- creating -----------------------------------------------------------------

    def earlier(self, owner: str, key: str, digest: str) -> list[str] | None:
        """The VM ids made under ``key`` by ``owner``, or None (``IdempotencyKeyReused``
        when the key came with another body)."""
        with Session(self.engine) as session:
            return idempotency.find(session, owner, SCOPE, key, digest)

    def insert(
        self,
        rows: Sequence[BrokerVm],
        reason: str,
        *,
        owner: str,
        key: str | None,
        digest: str,
    ) -> list[str] | None:
        """Store new VMs (each with a first event) and the key, atomically.

        Returns None when stored; when a concurrent request stored the same
        (owner, key) first, stores nothing and returns the ids it made.
        """
        try:
            with session_scope(self.engine) as session:
                if key is not None:
                    idempotency.remember(session, owner, SCOPE, key, digest, [r.id for r in rows])
                session.add_all(rows)
                session.flush()
                for row in rows:
                    session.add(BrokerVmEvent(vm_id=row.id, to_state=row.state, reason=reason))
        except IntegrityError:
            if key is None:
                raise
            return self.earlier(owner, key, digest) or []
        return None

    def forget_request(self, vm_ids: Iterable[str], owner: str, key: str | None) -> None:
        """Remove VMs that were never made (a create that failed as a whole) and their key."""
        ids = list(vm_ids)
        with session_scope(self.engine) as session:
            if ids:
                session.exec(delete(BrokerVmEvent).where(col(BrokerVmEvent.vm_id).in_(ids)))
                session.exec(delete(QueueRecord).where(col(QueueRecord.id).in_(ids)))
                session.exec(delete(BrokerVm).where(col(BrokerVm.id).in_(ids)))
            if key is not None:
                idempotency.forget(session, owner, SCOPE, key)

    # --- reading ------------------------------------------------------------------

    def get(self, vm_id: str) -> BrokerVm | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(BrokerVm, vm_id)

    def get_many(self, vm_ids: Sequence[str]) -> list[BrokerVm]:
        with Session(self.engine, expire_on_commit=False) as session:
            rows = session.exec(select(BrokerVm).where(col(BrokerVm.id).in_(list(vm_ids)))).all()
        order = {vm_id: i for i, vm_id in enumerate(vm_ids)}
        return sorted(rows, key=lambda r: order[r.id])

    def list_vms(self, owner: str | None, *, include_done: bool = True) -> list[BrokerVm]:
        """VMs of ``owner`` (None: everyone's), newest first; without ``include_done``
        the terminal ones are left out."""
        with Session(self.engine, expire_on_commit=False) as session:
            query = select(BrokerVm)
            if owner is not None:
                query = query.where(BrokerVm.owner == owner)
            if not include_done:
                query = query.where(col(BrokerVm.state).not_in(_TERMINAL))
            return list(session.exec(query.order_by(col(BrokerVm.created_at).desc())).all())

    def on_site(self, site: str) -> list[str]:
        """Ids of the VMs placed at ``site`` that are not final (done, expired)."""
        with Session(self.engine) as session:
            ids = session.exec(
                select(BrokerVm.id).where(BrokerVm.site == site, col(BrokerVm.state).not_in(_FINAL))
            ).all()
        return list(ids)

    def known_site_ids(self, site: str) -> set[str]:
        """Every provider VM id the broker ever recorded at ``site`` (for the orphan sweep)."""
        with Session(self.engine) as session:
            ids = session.exec(
                select(BrokerVm.site_vm_id).where(
                    BrokerVm.site == site, col(BrokerVm.site_vm_id).is_not(None)
                )
            ).all()
        return {i for i in ids if i is not None}

    def refs_at(self, site: str, site_vm_ids: Iterable[str]) -> dict[str, VmRef]:
        """Provider VM id -> the broker's VM, for the ids of ``site`` the broker knows."""
        ids = list(site_vm_ids)
        if not ids:
            return {}
        with Session(self.engine) as session:
            rows = session.exec(
                select(BrokerVm).where(BrokerVm.site == site, col(BrokerVm.site_vm_id).in_(ids))
            ).all()
            return {r.site_vm_id: _ref(r) for r in rows if r.site_vm_id is not None}

    def ref(self, vm_id: str) -> VmRef | None:
        row = self.get(vm_id)
        return _ref(row) if row is not None else None

    # --- changing -----------------------------------------------------------------

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
        provider logs that change itself)."""
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
                        reason=reason or "state reported by the provider",
                    )
                )
            session.flush()
            session.refresh(vm)
            return vm

    def sync(self, vm_id: str, vm: ProviderVM, *, log_state: bool, reason: str) -> BrokerVm:
        """Copy what the provider reports of the VM (see :func:`provider_fields`)."""
        return self.update(
            vm_id, reason=reason, event_site=vm.site, log_state=log_state, **provider_fields(vm)
        )

    def placed(
        self, vm_id: str, vm: ProviderVM, kind: ProviderKind, reason: str, **fields: Any
    ) -> BrokerVm:
        """Record where a VM was made (the provider, its id there) with one event."""
        with session_scope(self.engine) as session:
            row = session.get(BrokerVm, vm_id)
            if row is None:
                raise KeyError(vm_id)
            before = row.state
            values = {
                **provider_fields(vm),
                **fields,
                "site": vm.site,
                "kind": kind.value,
                "site_vm_id": vm.provider_id,
            }
            for key, value in values.items():
                setattr(row, key, value)
            row.updated_at = utcnow()
            session.add(row)
            moved = before != row.state
            session.add(
                BrokerVmEvent(
                    vm_id=vm_id,
                    site=vm.site,
                    from_state=before if moved else None,
                    to_state=row.state if moved else None,
                    reason=reason,
                )
            )
            session.flush()
            session.refresh(row)
            return row

    # --- events -------------------------------------------------------------------

    def add_events(self, vm_ids: Iterable[str], reason: str, *, site: str | None = None) -> None:
        with session_scope(self.engine) as session:
            for vm_id in vm_ids:
                session.add(BrokerVmEvent(vm_id=vm_id, site=site, reason=reason))

    def save_events(self, lines: Iterable[tuple[str, datetime, str | None, str]]) -> None:
        """Store ``(vm_id, at, site, reason)`` lines (a placement's attempts) in one go."""
        with session_scope(self.engine) as session:
            for vm_id, at, site, reason in lines:
                session.add(BrokerVmEvent(vm_id=vm_id, at=at, site=site, reason=reason))

    def events(self, vm_id: str) -> list[BrokerVmEvent]:
        with Session(self.engine, expire_on_commit=False) as session:
            return list(
                session.exec(
                    select(BrokerVmEvent)
                    .where(BrokerVmEvent.vm_id == vm_id)
                    .order_by(col(BrokerVmEvent.at), col(BrokerVmEvent.id))
                ).all()
            )

    # --- totals -------------------------------------------------------------------

    def burst_spent(self, since: datetime) -> float:
        """Estimated cost of the VMs burst to public clouds since ``since``."""
        with Session(self.engine) as session:
            total = session.exec(
                select(func.coalesce(func.sum(BrokerVm.estimated_cost), 0.0)).where(
                    BrokerVm.kind == ProviderKind.CLOUD.value, col(BrokerVm.created_at) >= since
                )
            ).one()
        return float(total or 0.0)

    def active_counts(self) -> dict[str, int]:
        """Number of VMs not final per site or cloud."""
        with Session(self.engine) as session:
            rows = session.exec(
                select(BrokerVm.site, func.count())
                .where(col(BrokerVm.site).is_not(None), col(BrokerVm.state).not_in(_FINAL))
                .group_by(BrokerVm.site)
            ).all()
        return {site: int(n) for site, n in rows if site is not None}

    # --- queue --------------------------------------------------------------------

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
