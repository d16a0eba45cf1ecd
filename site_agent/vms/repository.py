"""Database access for VMs and their events (synchronous; callers run it in a thread)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel, col, or_, select

from core import idempotency
from core.db import session_scope, utcnow
from core.vm_state import TERMINAL_STATES, VmState
from site_agent.vms.models import Vm, VmEvent
from site_agent.vms.states import check_transition

#: ``core.idempotency`` scope of VM creates.
SCOPE = "vms"


class VmRepository:
    """All SQL the VM lifecycle needs. Each method is one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def insert(
        self,
        vms: Sequence[Vm],
        reason: str,
        extra: Sequence[SQLModel] = (),
        *,
        key: str | None = None,
        digest: str = "",
    ) -> bool:
        """Insert new VMs (with their first event) and, with ``key``, the key's record, atomically.

        ``extra`` rows that refer to the VMs (network leases, disk attachments)
        are inserted in the same transaction, after the VMs. The key is
        recorded (``core.idempotency``, scope ``"vms"``, for the VMs' owner)
        before anything else.

        Returns False, inserting nothing, if another request already stored the
        same idempotency key (the caller then answers with that request's VMs).
        """
        try:
            with session_scope(self.engine) as session:
                if key is not None:
                    owner = vms[0].owner
                    ids = [vm.id for vm in vms]
                    idempotency.remember(session, owner, SCOPE, key, digest, ids)
                for vm in vms:
                    session.add(vm)
                session.flush()
                for row in extra:
                    session.add(row)
                for vm in vms:
                    session.add(VmEvent(vm_id=vm.id, to_state=vm.state, reason=reason))
        except IntegrityError:
            if key is None:
                raise
            return False
        return True

    def find_idempotent(self, owner: str, key: str, digest: str) -> list[Vm] | None:
        """VMs created earlier by ``owner`` under ``key``, or None if the key is new.

        ``core.idempotency.IdempotencyKeyReused`` (409) if the key came with another body.
        """
        with session_scope(self.engine) as session:
            ids = idempotency.find(session, owner, SCOPE, key, digest)
            if ids is None:
                return None
            rows = session.exec(select(Vm).where(col(Vm.id).in_(ids))).all()
            by_id = {vm.id: vm for vm in rows}
            return [by_id[i] for i in ids if i in by_id]

    def get(self, vm_id: str) -> Vm | None:
        with session_scope(self.engine) as session:
            return session.get(Vm, vm_id)

    def list_vms(
        self,
        owner: str | None = None,
        *,
        include_terminal: bool = True,
        groups: Sequence[str] = (),
        via: str | None = None,
    ) -> list[Vm]:
        """VMs of ``owner`` or shared with one of ``groups`` (all VMs when ``owner`` is None),
        newest first; with ``via``, only those the broker of that name created."""
        with session_scope(self.engine) as session:
            query = select(Vm)
            if owner is not None:
                query = query.where(or_(Vm.owner == owner, col(Vm.group).in_(list(groups))))
            if via is not None:
                query = query.where(Vm.via == via)
            if not include_terminal:
                query = query.where(col(Vm.state).not_in(list(TERMINAL_STATES)))
            return list(session.exec(query.order_by(col(Vm.created_at).desc())).all())

    def active_on_hosts(self) -> list[Vm]:
        """VMs that hold host resources (any non-terminal state)."""
        return self.list_vms(None, include_terminal=False)

    def images_in_use(self) -> set[str]:
        """Names of the images non-terminal VMs boot from (they must stay in the cache)."""
        with session_scope(self.engine) as session:
            query = select(Vm.image).where(col(Vm.state).not_in(list(TERMINAL_STATES)))
            return set(session.exec(query.distinct()).all())

    def transition(self, vm_id: str, target: VmState, reason: str, **fields: Any) -> Vm:
        """Move ``vm_id`` to ``target`` (checked), set ``fields``, and log the event."""
        with session_scope(self.engine) as session:
            vm = session.get(Vm, vm_id, with_for_update=True)
            if vm is None:
                raise KeyError(vm_id)
            current = VmState(vm.state)
            check_transition(current, target)
            vm.state = target
            vm.state_reason = reason
            vm.updated_at = utcnow()
            for name, value in fields.items():
                setattr(vm, name, value)
            session.add(vm)
            session.add(VmEvent(vm_id=vm_id, from_state=current, to_state=target, reason=reason))
            return vm

    def update(self, vm_id: str, reason: str | None = None, **fields: Any) -> Vm:
        """Set ``fields`` without a state change; log ``reason`` as an event if given."""
        with session_scope(self.engine) as session:
            vm = session.get(Vm, vm_id, with_for_update=True)
            if vm is None:
                raise KeyError(vm_id)
            for name, value in fields.items():
                setattr(vm, name, value)
            vm.updated_at = utcnow()
            session.add(vm)
            if reason is not None:
                session.add(VmEvent(vm_id=vm_id, reason=reason))
            return vm

    def add_event(self, vm_id: str, reason: str) -> None:
        with session_scope(self.engine) as session:
            session.add(VmEvent(vm_id=vm_id, reason=reason))

    def events(self, vm_id: str) -> list[VmEvent]:
        with session_scope(self.engine) as session:
            query = select(VmEvent).where(VmEvent.vm_id == vm_id).order_by(col(VmEvent.id))
            return list(session.exec(query).all())
