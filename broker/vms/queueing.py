"""The deferred queue: VMs waiting for capacity, stored, restored, expired and started.

A VM is queued when it asked to wait (``queue: true``) or the burst policy
says so. It is stored (``broker_queue``) with its placement request and
the :class:`~auth.delegation.DelegatedUser` it is made for, so that after a
broker restart it is still made as that user. The monitor calls
:meth:`VmQueue.drain`: overdue requests expire; the ones that fit now are
taken out (priority, then FIFO; small ones may backfill) with their
capacity reserved, and started by :meth:`broker.vms.create.VmCreator.start_queued`.
A start that fails puts the request back (:meth:`VmQueue.requeue`).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from auth.delegation import DelegatedUser
from broker.runtime import Runtime, db
from broker.vms.models import BrokerVm, QueueRecord
from core.vm_state import VmState
from federation.model import PlacementDecision, PlacementRequest
from federation.queue import DeferredQueue, QueuedRequest, QueueState


def request_to_json(request: PlacementRequest) -> dict[str, Any]:
    """A placement request as stored with a queued VM (sets and tuples as lists)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(request):
        if not f.init:  # derived in __post_init__
            continue
        value = getattr(request, f.name)
        if isinstance(value, frozenset | set):
            value = sorted(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, dict):  # a mapping of strings, or of sets (own_images)
            value = {
                k: sorted(v) if isinstance(v, frozenset | set) else v for k, v in value.items()
            }
        elif hasattr(value, "value"):  # an enum
            value = value.value
        out[f.name] = value
    return out


def request_from_json(data: dict[str, Any]) -> PlacementRequest:
    """The inverse of :func:`request_to_json` (unknown keys of older rows are dropped)."""
    kinds = {f.name: str(f.type) for f in dataclasses.fields(PlacementRequest) if f.init}
    values: dict[str, Any] = {}
    for name, value in data.items():
        kind = kinds.get(name)
        if kind is None:
            continue
        if isinstance(value, list) and kind.startswith("frozenset"):
            value = frozenset(value)
        elif isinstance(value, list) and kind.startswith("tuple"):
            value = tuple(value)
        values[name] = value
    return PlacementRequest(**values)


def user_to_json(user: DelegatedUser | None) -> dict[str, Any]:
    if user is None:
        return {}
    return {
        "account": user.account,
        "identity": user.identity,
        "method": user.method,
        "groups": sorted(user.groups),
        "fqans": list(user.fqans),
    }


def user_from_json(data: dict[str, Any]) -> DelegatedUser | None:
    if not data:
        return None
    return DelegatedUser(
        account=str(data["account"]),
        identity=str(data["identity"]),
        method=str(data["method"]),
        groups=frozenset(data.get("groups") or ()),
        fqans=tuple(data.get("fqans") or ()),
    )


class VmQueue:
    """The broker's side of :class:`federation.queue.DeferredQueue` (module docstring)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._started: dict[str, QueuedRequest] = {}

    async def restore(self) -> int:
        """Load the waiting requests from the database; returns how many."""
        rows = await db(self.rt.vms.waiting)
        self.rt.queue = DeferredQueue.load(
            (
                QueuedRequest(
                    id=r.id,
                    request=request_from_json(r.request),
                    priority=r.priority,
                    enqueued_at=r.enqueued_at,
                    deadline=r.deadline,
                    seq=r.seq,
                    payload={"user": r.user},
                )
                for r in rows
            ),
            clock=self.rt.clock,
        )
        return len(self.rt.queue)

    async def enqueue(
        self, row: BrokerVm, request: PlacementRequest, user: DelegatedUser | None, why: str
    ) -> BrokerVm:
        """Queue a VM no site can take now (its deadline and priority from its request)."""
        qc = self.rt.config.queue
        asked = row.spec.get("deadline_seconds")
        wait = min(float(asked or qc.default_deadline_seconds), qc.max_deadline_seconds)
        now = self.rt.clock()
        stored_user = user_to_json(user)
        item = self.rt.queue.push(
            QueuedRequest(
                id=row.id,
                request=request,
                priority=int(row.spec.get("priority") or 0),
                enqueued_at=now,
                deadline=now + wait,
                payload={"user": stored_user},
            )
        )
        await db(
            self.rt.vms.save_queue,
            QueueRecord(
                id=item.id,
                priority=item.priority,
                seq=item.seq,
                enqueued_at=item.enqueued_at,
                deadline=item.deadline,
                state=QueueState.WAITING.value,
                request=request_to_json(request),
                user=stored_user,
            ),
        )
        deadline = datetime.fromtimestamp(now + wait, UTC).isoformat(timespec="seconds")
        return await db(
            self.rt.vms.update,
            row.id,
            reason=f"queued until capacity frees ({why}); expires at {deadline}",
            state=VmState.QUEUED.value,
            state_reason=f"waiting for capacity; expires at {deadline}",
        )

    async def requeue(self, vm_id: str, why: str) -> None:
        """A started request that could not be placed goes back, in its old place."""
        item = self._started.pop(vm_id, None)
        if item is None:
            return
        item.state = QueueState.WAITING
        item.reason = None
        self.rt.queue.push(item)
        await db(self.rt.vms.set_queue_state, vm_id, QueueState.WAITING.value, why)
        await db(
            self.rt.vms.update,
            vm_id,
            reason=f"{why}; back in the queue",
            state=VmState.QUEUED.value,
            state_reason="waiting for capacity (a start attempt failed)",
        )

    def drop(self, vm_id: str) -> None:
        """Forget a queued VM whose request failed as a whole (its rows are removed)."""
        if vm_id in self.rt.queue:
            self.rt.queue.cancel(vm_id, "its request failed as a whole")

    def started(self, vm_id: str) -> None:
        """A started request was placed: it is out of the queue for good."""
        self._started.pop(vm_id, None)

    def leaving(self, vm_id: str) -> bool:
        """True while a VM taken out of the queue is being placed (kill it a moment later)."""
        return vm_id in self._started

    async def cancel(self, vm_id: str, who: str) -> BrokerVm:
        """Take a queued VM out of the queue (it never ran): it is ``done``.

        The in-memory queue changes before anything is awaited (one event
        loop: no other task sees it half done), so no lock is held across the
        database writes.
        """
        if vm_id in self.rt.queue:
            self.rt.queue.cancel(vm_id, f"killed by {who} while queued")
        await db(self.rt.vms.set_queue_state, vm_id, QueueState.CANCELLED.value, "killed")
        return await db(
            self.rt.vms.update,
            vm_id,
            reason=f"removed from the queue by {who} before it started",
            state=VmState.DONE.value,
            state_reason="removed from the queue before it started",
        )

    async def drain(self) -> list[tuple[QueuedRequest, PlacementDecision, DelegatedUser | None]]:
        """Expire overdue requests; take out those that fit now, their capacity reserved.

        Returns what to start: each request, its placement plan and its user.
        The queue and the placer change synchronously first; the database
        follows (no lock is held across I/O).
        """
        expired = self.rt.queue.expire()
        plans: dict[str, PlacementDecision] = {}

        def can_place(item: QueuedRequest) -> bool:
            decision = self.rt.placer.decide(item.request)
            if not decision.found:
                return False
            best = decision.candidates[0]
            self.rt.placer.reserve(best.site, item.request.vcpus, item.request.memory_mib)
            plans[item.id] = decision
            return True

        started = []
        if len(self.rt.queue):
            started = self.rt.queue.pop_ready(can_place, backfill=self.rt.config.queue.backfill)
        for item in started:
            self._started[item.id] = item
        for item in expired:
            reason = item.reason or "deadline passed"
            await db(self.rt.vms.set_queue_state, item.id, item.state.value, reason)
            await db(
                self.rt.vms.update,
                item.id,
                reason=f"expired in the queue: {reason}",
                state=VmState.EXPIRED.value,
                state_reason=f"expired in the queue: {reason}",
            )
        out = []
        for item in started:
            await db(self.rt.vms.set_queue_state, item.id, QueueState.STARTED.value, item.reason)
            out.append((item, plans[item.id], user_from_json(item.payload.get("user") or {})))
        return out
