"""Lease SQL (synchronous; callers run it in a thread). Each method is one transaction."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import col, delete, func, select

from core.db import session_scope
from core.vm_state import TERMINAL_STATES
from site_agent.networks.models import Lease
from site_agent.vms.models import Vm


class LeaseRepository:
    """Reads and releases leases. New leases are inserted with their VM rows (one transaction)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def leased_addresses(self, pool: str) -> set[str]:
        with session_scope(self.engine) as session:
            rows = session.exec(select(Lease.address).where(Lease.pool == pool)).all()
            return set(rows)

    def macs_in_use(self, macs: list[str]) -> set[str]:
        """Which of ``macs`` are already leased."""
        with session_scope(self.engine) as session:
            rows = session.exec(select(Lease.mac).where(col(Lease.mac).in_(macs))).all()
            return set(rows)

    def lease_of(self, vm_id: str) -> Lease | None:
        with session_scope(self.engine) as session:
            return session.exec(select(Lease).where(Lease.vm_id == vm_id)).first()

    def leases(self, pool: str, owner: str | None = None) -> list[Lease]:
        """The pool's leases (of ``owner`` only, if given), by address."""
        with session_scope(self.engine) as session:
            query = select(Lease).where(Lease.pool == pool)
            if owner is not None:
                query = query.where(Lease.owner == owner)
            rows = list(session.exec(query).all())
        return sorted(rows, key=lambda lease: tuple(int(p) for p in lease.address.split(".")))

    def counts(self) -> dict[str, int]:
        """Leases per pool."""
        with session_scope(self.engine) as session:
            rows = session.exec(select(Lease.pool, func.count()).group_by(Lease.pool)).all()
            return {pool: int(count) for pool, count in rows}

    def release_vm(self, vm_id: str) -> list[Lease]:
        """Delete the leases of ``vm_id``; returns them."""
        with session_scope(self.engine) as session:
            rows = list(session.exec(select(Lease).where(Lease.vm_id == vm_id)).all())
            for row in rows:
                session.delete(row)
            return rows

    def release_finished(self) -> int:
        """Delete every lease whose VM is ``done`` or ``failed``; returns how many."""
        finished = select(Vm.id).where(col(Vm.state).in_(list(TERMINAL_STATES)))
        with session_scope(self.engine) as session:
            result = session.exec(delete(Lease).where(col(Lease.vm_id).in_(finished)))
            return int(result.rowcount or 0)
