"""The broker's core: placing, forwarding, aggregating, bursting and queueing VMs.

Creating a VM (:meth:`Broker.create`):

1. the request is checked (named sites exist, constraints parse) and the VM
   rows are stored with the ``Idempotency-Key`` record in one transaction, so
   a retried request returns the same VMs and makes nothing twice;
2. the :class:`~federation.placement.Placer` (fed by the heartbeats) ranks
   the sites; :func:`~federation.attempts.place_with_failover` tries them best
   first, each create carrying the broker's VM id as ``Idempotency-Key`` (the
   site makes one VM per key, so a retried call after a lost answer is safe);
3. when no site can take it (or every candidate refused or failed) the
   :class:`~federation.bursting.BurstPolicy` decides: burst to a public cloud,
   queue it, or refuse with 409 and the reasons per site;
4. every attempt and its reason goes into the VM's broker-side event log.

A failed create leaves nothing: the VMs already made for the request are
killed and the rows and key removed.  A VM made at a site whose answer never
arrived is found by the orphan sweep (a VM of the broker's account the
broker has no record of) and killed after a grace period.

Reading: every operation on a VM goes to its site or cloud; listings ask
all sites concurrently, each within ``list_timeout_seconds``.  A site that is
unavailable (missed heartbeats) is not asked; a site that does not answer
makes the listing ``partial`` with a warning; in both cases its VMs are shown
from the broker's records in state ``unknown`` with the reason.  Nothing is
deleted because a site is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from auth.principal import Principal
from broker.config import BrokerConfig
from broker.errors import (
    IdempotencyKeyReused,
    InvalidOperation,
    SiteUnreachable,
    UnknownSite,
    VmNotFound,
)
from broker.models import (
    BrokerIdempotency,
    BrokerVm,
    BrokerVmCreate,
    BrokerVmEvent,
    BrokerVmEventList,
    BrokerVmEventPublic,
    BrokerVmList,
    BrokerVmPublic,
    BrokerVmState,
    ConsoleOutput,
    HeartbeatAck,
    ImageList,
    ImagePublic,
    QueueRecord,
    SiteList,
    SitePublic,
    SiteReport,
    VmKind,
)
from broker.sites import SiteOperationRefused, SiteRegistry, SiteVM
from broker.store import BrokerStore, IdempotencyConflict, request_hash
from core.db import utcnow
from core.errors import StratusError, ValidationFailed
from federation.attempts import place_with_failover
from federation.bursting import BurstAction, BurstDecision, BurstPolicy
from federation.constraints import parse_constraints
from federation.errors import (
    AllAttemptsFailed,
    FederationError,
    InvalidConstraint,
    ProviderError,
    SiteFailed,
    VMNotFound,
    to_stratus_error,
)
from federation.model import Candidate, PlacementDecision, PlacementRequest
from federation.placement import Placer, placement_error
from federation.providers.base import ProviderVM, VMCreateRequest, VMState
from federation.queue import DeferredQueue, QueuedRequest, QueueState

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Site VM fields copied into the broker's record.
_SITE_FIELDS = ("state", "state_reason", "ready", "ip", "host")
_WAIT_STEP = 5.0  # seconds a forwarded ?wait= holds at most per call


def _now() -> datetime:
    return datetime.now(UTC)


def request_to_json(request: PlacementRequest) -> dict[str, Any]:
    """A placement request as stored with a queued VM."""
    return {
        "vcpus": request.vcpus,
        "memory_mib": request.memory_mib,
        "image": request.image,
        "network": request.network.value if request.network else None,
        "vo": request.vo,
        "groups": sorted(request.groups),
        "sites": list(request.sites) if request.sites is not None else None,
        "location": dict(request.location),
        "preferred_sites": list(request.preferred_sites),
        "data_location": dict(request.data_location),
        "user": request.user,
        "instance_type": request.instance_type,
        "confidential": request.confidential,
        "allow_burst": request.allow_burst,
        "wait": request.wait,
        "expected_hours": request.expected_hours,
    }


def request_from_json(data: dict[str, Any]) -> PlacementRequest:
    """The inverse of :func:`request_to_json`."""
    values = dict(data)
    values["groups"] = frozenset(values.get("groups") or ())
    if values.get("sites") is not None:
        values["sites"] = tuple(values["sites"])
    values["preferred_sites"] = tuple(values.get("preferred_sites") or ())
    return PlacementRequest(**values)


def _site_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """The broker-record fields from a site's VM resource."""
    out: dict[str, Any] = {}
    state = str(raw.get("state", "unknown"))
    out["state"] = state if state in BrokerVmState.__members__.values() else "unknown"
    out["state_reason"] = raw.get("state_reason")
    out["ready"] = bool(raw.get("ready", False))
    out["ip"] = raw.get("ip")
    out["host"] = raw.get("host")
    out["addresses"] = [raw["ip"]] if raw.get("ip") else []
    return out


def _cloud_fields(vm: ProviderVM) -> dict[str, Any]:
    state = vm.state.value
    return {
        "state": state,
        "state_reason": f"public cloud state {vm.raw_state or state}",
        "ready": vm.state is VMState.RUNNING,
        "ip": vm.addresses[0] if vm.addresses else None,
        "host": None,
        "addresses": list(vm.addresses),
    }


@dataclass
class _Attempts:
    """Collects the lines of a placement for the VM's event log (written in one go)."""

    vm_id: str
    lines: list[BrokerVmEvent]

    def __call__(self, site: str | None, message: str) -> None:
        self.lines.append(BrokerVmEvent(vm_id=self.vm_id, at=utcnow(), site=site, reason=message))


class Broker:
    """One API over the federation's sites and public clouds (see the module docstring)."""

    def __init__(
        self,
        config: BrokerConfig,
        store: BrokerStore,
        registry: SiteRegistry,
        placer: Placer,
        policy: BurstPolicy,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.registry = registry
        self.placer = placer
        self.policy = policy
        self.clock = clock
        self.queue = DeferredQueue(clock=clock)
        self._queue_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self._started: dict[str, QueuedRequest] = {}

    # --- plumbing -----------------------------------------------------------------

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def wake(self) -> None:
        """Ask the monitor to look at the queue now (capacity may have freed)."""
        self._wake.set()

    async def start(self) -> None:
        """Restore sites and the queue from the database; settle interrupted creates."""
        self.registry.load(await self._db(self.store.sites))
        rows = await self._db(self.store.waiting)
        self.queue = DeferredQueue.load(
            (
                QueuedRequest(
                    id=r.id,
                    request=request_from_json(r.request),
                    priority=r.priority,
                    enqueued_at=r.enqueued_at,
                    deadline=r.deadline,
                    seq=r.seq,
                )
                for r in rows
            ),
            clock=self.clock,
        )
        for vm in await self._db(self.store.list_vms, None, include_done=False):
            if vm.kind is None and vm.state == BrokerVmState.PENDING and vm.id not in self.queue:
                await self._db(
                    self.store.update,
                    vm.id,
                    state=BrokerVmState.FAILED.value,
                    state_reason="the broker restarted while placing this VM",
                    reason="the broker restarted while placing this VM; nothing was kept",
                )
        log.info("broker started: %d queued request(s) restored", len(self.queue))

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _row_for(self, principal: Principal, vm_id: str) -> BrokerVm:
        row = await self._db(self.store.get, vm_id)
        if row is None or not principal.can_access(row.owner, row.group):
            raise VmNotFound(f"no VM with id {vm_id!r}")
        return row

    # --- views --------------------------------------------------------------------

    def _view(self, row: BrokerVm, *, unknown_reason: str | None = None) -> BrokerVmPublic:
        state = (
            BrokerVmState(row.state)
            if row.state in BrokerVmState.__members__.values()
            else (BrokerVmState.UNKNOWN)
        )
        reason = row.state_reason
        if unknown_reason is not None and not state.is_final:
            state = BrokerVmState.UNKNOWN
            reason = unknown_reason
        position = None
        deadline = None
        if row.state == BrokerVmState.QUEUED and row.id in self.queue:
            position = self.queue.position(row.id)
            item = self.queue.get(row.id)
            if item.deadline is not None:
                deadline = datetime.fromtimestamp(item.deadline, UTC)
        return BrokerVmPublic(
            id=row.id,
            name=row.name,
            owner=row.owner,
            image=row.image,
            instance_type=row.instance_type,
            vcpus=row.vcpus,
            memory_mib=row.memory_mib,
            state=state,
            state_reason=reason,
            ready=row.ready and state is BrokerVmState.RUNNING,
            ip=row.ip,
            host=row.host,
            created_at=row.created_at,
            updated_at=row.updated_at,
            site=row.site,
            kind=VmKind(row.kind) if row.kind else None,
            site_vm_id=row.site_vm_id,
            addresses=list(row.addresses),
            price_per_hour=row.price_per_hour,
            queue_position=position,
            deadline=deadline,
        )

    # --- create -------------------------------------------------------------------

    def _placement_request(
        self, principal: Principal, body: BrokerVmCreate, itype: str | None, vcpus: int, mem: int
    ) -> PlacementRequest:
        constraints = parse_constraints(body.constraints)
        sites = constraints.sites
        if body.site is not None:
            if sites is not None and body.site not in sites:
                raise InvalidConstraint(
                    f"site {body.site!r} is not in the constraint's sites {list(sites)}",
                    text=f"site == {body.site}",
                )
            sites = (body.site,)
        for name in sites or ():
            if not self.registry.is_site(name):
                hint = (
                    " (a public cloud: clouds are used only by bursting)"
                    if (self.registry.is_cloud(name))
                    else ""
                )
                raise UnknownSite(
                    f"unknown site {name!r}{hint}",
                    details={"site": name, "known": self.registry.site_names()},
                )
        return PlacementRequest(
            vcpus=vcpus,
            memory_mib=mem,
            image=body.image,
            network=body.network_type,
            groups=principal.groups,
            sites=sites,
            location=constraints.location,
            preferred_sites=tuple(body.preferred_sites),
            data_location=body.data_location,
            user=principal.account,
            instance_type=itype,
            confidential=body.confidential,
            allow_burst=body.allow_burst,
            wait=body.queue,
            expected_hours=body.expected_hours,
        )

    async def create(
        self, principal: Principal, body: BrokerVmCreate, key: str | None
    ) -> list[BrokerVmPublic]:
        """Place ``body.count`` VMs (see the module docstring); idempotent on ``key``."""
        spec = body.model_dump(mode="json")
        digest = request_hash(spec)
        if key is not None:
            earlier = await self._find_idempotent(principal.account, key, digest)
            if earlier is not None:
                return earlier
        if body.count > self.config.broker.max_count_per_request:
            raise ValidationFailed(
                f"count {body.count} is above the broker's limit of "
                f"{self.config.broker.max_count_per_request}"
            )
        if body.priority > self.config.queue.max_priority:
            raise ValidationFailed(
                f"priority {body.priority} is above the limit of {self.config.queue.max_priority}"
            )
        itype, vcpus, mem = body.sizing()
        request = self._placement_request(principal, body, itype, vcpus, mem)
        base = body.name or f"vm-{uuid.uuid4().hex[:8]}"
        rows = [
            BrokerVm(
                id=str(uuid.uuid4()),
                owner=principal.account,
                name=base if body.count == 1 else f"{base}-{i}",
                image=body.image,
                vcpus=vcpus,
                memory_mib=mem,
                instance_type=itype,
                state=BrokerVmState.PENDING.value,
                state_reason="being placed by the broker",
                spec=spec,
            )
            for i in range(body.count)
        ]
        record = (
            BrokerIdempotency(
                owner=principal.account,
                key=key,
                request_hash=digest,
                vm_ids=[r.id for r in rows],
            )
            if key is not None
            else None
        )
        stored = await self._db(
            self.store.insert_vms, rows, f"create request accepted from {principal.account}", record
        )
        if not stored:
            assert key is not None
            return await self._find_idempotent(principal.account, key, digest) or []
        made: list[str] = []
        try:
            for row in rows:
                await self._place(row, request, body)
                made.append(row.id)
        except BaseException:
            for vm_id in made:
                await self._kill_quietly(vm_id)
            await self._db(self.store.forget_request, [r.id for r in rows], principal.account, key)
            raise
        fresh = await self._db(self.store.get_many, [r.id for r in rows])
        return [self._view(r) for r in fresh]

    async def _find_idempotent(
        self, owner: str, key: str, digest: str
    ) -> list[BrokerVmPublic] | None:
        try:
            ids = await self._db(self.store.find_idempotent, owner, key, digest)
        except IdempotencyConflict as exc:
            raise IdempotencyKeyReused(
                "Idempotency-Key was already used with a different request body"
            ) from exc
        if ids is None:
            return None
        return [self._view(r) for r in await self._db(self.store.get_many, ids)]

    def _create_request(self, row: BrokerVm) -> VMCreateRequest:
        """The provider's create request for ``row`` (its id is the idempotency key)."""
        spec = row.spec
        sized = (
            {"instance_type": row.instance_type}
            if row.instance_type
            else {
                "vcpus": row.vcpus,
                "memory_mib": row.memory_mib,
            }
        )
        return VMCreateRequest(
            vm_id=row.id,
            idempotency_key=row.id,
            image=row.image,
            name=row.name,
            network=spec.get("network_type"),
            ssh_keys=tuple(spec.get("ssh_keys") or ()),
            user_data=spec.get("user_data"),
            context=dict(spec.get("context") or {}),
            **sized,
        )

    async def _try_site(
        self, row: BrokerVm, request: PlacementRequest, candidate: Candidate, *, reserve: bool
    ) -> ProviderVM:
        provider = self.registry.site_provider(candidate.site)
        vm = await provider.create_vm(self._create_request(row))
        if reserve:
            self.placer.reserve(candidate.site, request.vcpus, request.memory_mib)
        return vm

    async def _try_cloud(self, row: BrokerVm, candidate: Candidate) -> ProviderVM:
        provider = self.registry.cloud_provider(candidate.site)
        return await provider.create_vm(self._create_request(row))

    async def _placed(
        self,
        row: BrokerVm,
        vm: ProviderVM,
        kind: VmKind,
        *,
        reason: str,
        estimated_cost: float = 0.0,
    ) -> None:
        if isinstance(vm, SiteVM):
            fields = _site_fields(dict(vm.raw))
            report = self.registry.entries[vm.site].report
            if report is not None:
                fields["price_per_hour"] = report.price_per_hour * row.vcpus
        else:
            fields = _cloud_fields(vm)
            fields["price_per_hour"] = vm.price_per_hour
        await self._db(self._store_placed, row.id, vm, kind, fields, reason, estimated_cost)

    def _store_placed(
        self,
        vm_id: str,
        vm: ProviderVM,
        kind: VmKind,
        fields: dict[str, Any],
        reason: str,
        estimated_cost: float,
    ) -> None:
        before = self.store.get(vm_id)
        after = self.store.update(
            vm_id,
            log_state=False,
            site=vm.site,
            kind=kind.value,
            site_vm_id=vm.provider_id,
            estimated_cost=estimated_cost,
            **fields,
        )
        moved = before is not None and before.state != after.state
        self.store.add_event(
            vm_id,
            reason,
            site=vm.site,
            from_state=before.state if moved and before else None,
            to_state=after.state if moved else None,
        )

    async def _place(
        self,
        row: BrokerVm,
        request: PlacementRequest,
        body: BrokerVmCreate | None,
        *,
        decision: PlacementDecision | None = None,
    ) -> None:
        """Place one VM: sites by rank with failover, then the burst policy.

        ``body`` is None for a queued request being started (its capacity was
        reserved by the queue drain; on failure it goes back to the queue).
        Raises a ``StratusError`` (409/503) when the VM can be neither placed,
        burst nor queued.
        """
        record = _Attempts(row.id, [])
        timeout = self.config.broker.attempt_timeout_seconds
        from_queue = body is None
        try:
            decision = decision or self.placer.decide(request)
            failure: FederationError
            if decision.found:
                try:
                    vm = await place_with_failover(
                        decision,
                        lambda c: self._try_site(row, request, c, reserve=not from_queue),
                        record,
                        attempt_timeout=timeout,
                    )
                except AllAttemptsFailed as exc:
                    failure = exc
                else:
                    await self._placed(
                        row,
                        vm,
                        VmKind.SITE,
                        reason=f"site {vm.site} accepted the VM (its id there: {vm.provider_id})",
                    )
                    return
            else:
                failure = placement_error(decision)
                record(None, str(failure))
            if from_queue:
                await self._requeue(row.id, f"could not start: {failure}")
                return
            spent = await self._db(
                self.store.burst_spent, _now() - timedelta(seconds=self.policy.period_seconds)
            )
            burst = self.policy.decide(request, placement_found=False, spent=spent)
            record(None, f"burst policy: {burst.action.value}: {burst.reason}")
            if burst.action is BurstAction.BURST:
                await self._burst(row, request, burst, record, failure)
                return
            if burst.action is BurstAction.QUEUE:
                assert body is not None
                await self._enqueue(row, request, body, burst.reason)
                return
            raise self._refusal(failure, burst)
        finally:
            if record.lines:
                await self._db(self._save_events, record.lines)

    def _save_events(self, events: list[BrokerVmEvent]) -> None:
        from core.db import session_scope

        with session_scope(self.store.engine) as session:
            for event in events:
                session.add(event)

    def _refusal(self, failure: FederationError, burst: BurstDecision) -> StratusError:
        """The 409/503 for a request neither placed nor burst nor queued, with both reasons."""
        error = to_stratus_error(failure)
        details = dict(error.details) if isinstance(error.details, dict) else {}
        sites = details.get("sites")
        if isinstance(sites, dict):  # a trusted site without heartbeats is not "unknown"
            details["sites"] = {
                name: (
                    self.registry.status(name)[1] or why
                    if why == "unknown site" and self.registry.is_site(name)
                    else why
                )
                for name, why in sites.items()
            }
        details["burst"] = {"action": burst.action.value, "reason": burst.reason}
        error.details = details
        return error

    async def _burst(
        self,
        row: BrokerVm,
        request: PlacementRequest,
        burst: BurstDecision,
        record: _Attempts,
        failure: FederationError,
    ) -> None:
        costs = {offer.cloud: offer.estimated_cost for offer in burst.offers}
        try:
            vm = await place_with_failover(
                burst.as_placement(request),
                lambda c: self._try_cloud(row, c),
                record,
                attempt_timeout=self.config.broker.attempt_timeout_seconds,
            )
        except AllAttemptsFailed as exc:
            error = to_stratus_error(exc)
            details = dict(error.details) if isinstance(error.details, dict) else {}
            sites = to_stratus_error(failure).details
            details["sites"] = sites.get("sites", sites) if isinstance(sites, dict) else sites
            error.details = details
            error.message = f"no site could place the VM and bursting failed: {exc}"
            raise error from exc
        await self._placed(
            row,
            vm,
            VmKind.CLOUD,
            reason=f"burst to public cloud {vm.site}: {burst.reason}",
            estimated_cost=costs.get(vm.site, 0.0),
        )

    # --- queue ----------------------------------------------------------------------

    async def _enqueue(
        self, row: BrokerVm, request: PlacementRequest, body: BrokerVmCreate, why: str
    ) -> None:
        qc = self.config.queue
        wait = min(body.deadline_seconds or qc.default_deadline_seconds, qc.max_deadline_seconds)
        now = self.clock()
        item = self.queue.push(
            QueuedRequest(
                id=row.id,
                request=request,
                priority=body.priority,
                enqueued_at=now,
                deadline=now + wait,
            )
        )
        await self._db(
            self.store.save_queue,
            QueueRecord(
                id=item.id,
                priority=item.priority,
                seq=item.seq,
                enqueued_at=item.enqueued_at,
                deadline=item.deadline,
                state=QueueState.WAITING.value,
                request=request_to_json(request),
            ),
        )
        deadline = datetime.fromtimestamp(now + wait, UTC).isoformat(timespec="seconds")
        reason = f"queued until capacity frees ({why}); expires at {deadline}"
        await self._db(
            self.store.update,
            row.id,
            reason=reason,
            state=BrokerVmState.QUEUED.value,
            state_reason=f"waiting for capacity; expires at {deadline}",
        )

    async def _requeue(self, vm_id: str, why: str) -> None:
        item = self._started.pop(vm_id, None)
        if item is None:
            return
        item.state = QueueState.WAITING
        item.reason = None
        self.queue.push(item)
        await self._db(self.store.set_queue_state, vm_id, QueueState.WAITING.value, why)
        await self._db(
            self.store.update,
            vm_id,
            reason=f"{why}; back in the queue",
            state=BrokerVmState.QUEUED.value,
            state_reason="waiting for capacity (a start attempt failed)",
        )

    async def drain_queue(self) -> None:
        """Expire overdue requests, then start those that fit now (priority, then FIFO)."""
        async with self._queue_lock:
            for item in self.queue.expire():
                reason = item.reason or "deadline passed"
                await self._db(self.store.set_queue_state, item.id, item.state.value, reason)
                await self._db(
                    self.store.update,
                    item.id,
                    reason=f"expired in the queue: {reason}",
                    state=BrokerVmState.EXPIRED.value,
                    state_reason=f"expired in the queue: {reason}",
                )
            if not len(self.queue):
                return
            plans: dict[str, PlacementDecision] = {}

            def can_place(item: QueuedRequest) -> bool:
                decision = self.placer.decide(item.request)
                if not decision.found:
                    return False
                best = decision.candidates[0]
                self.placer.reserve(best.site, item.request.vcpus, item.request.memory_mib)
                plans[item.id] = decision
                return True

            started = self.queue.pop_ready(can_place, backfill=self.config.queue.backfill)
            for item in started:
                self._started[item.id] = item
                await self._db(
                    self.store.set_queue_state, item.id, QueueState.STARTED.value, item.reason
                )
                self._spawn(self._start_queued(item, plans[item.id]))

    async def _start_queued(self, item: QueuedRequest, decision: PlacementDecision) -> None:
        row = await self._db(self.store.get, item.id)
        if row is None:
            return
        await self._db(
            self.store.update,
            row.id,
            reason="capacity freed: leaving the queue",
            state=BrokerVmState.PENDING.value,
            state_reason="being placed by the broker (from the queue)",
        )
        try:
            await self._place(row, item.request, None, decision=decision)
        except Exception:
            log.exception("starting queued VM %s failed", item.id)
            await self._requeue(item.id, "could not start (internal error)")
            return
        self._started.pop(item.id, None)

    # --- reading --------------------------------------------------------------------

    async def get(
        self, principal: Principal, vm_id: str, *, wait: str | None, timeout: float
    ) -> BrokerVmPublic:
        """One VM, fresh from its site or cloud; with ``wait`` until running/ready or terminal."""
        row = await self._row_for(principal, vm_id)
        deadline = time.monotonic() + timeout
        while True:
            row, unknown = await self._refresh(row, wait=wait, deadline=deadline)
            view = self._view(row, unknown_reason=unknown)
            if wait is None or unknown is not None or self._reached(view, wait):
                return view
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return view
            if row.kind != VmKind.SITE.value:  # clouds and the queue: poll
                await asyncio.sleep(min(1.0, remaining))

    @staticmethod
    def _reached(view: BrokerVmPublic, wait: str) -> bool:
        if view.state in (BrokerVmState.DONE, BrokerVmState.FAILED, BrokerVmState.EXPIRED):
            return True
        if wait == "ready":
            return view.ready
        return view.state is BrokerVmState.RUNNING

    async def _refresh(
        self, row: BrokerVm, *, wait: str | None = None, deadline: float = 0.0
    ) -> tuple[BrokerVm, str | None]:
        """Ask the VM's site or cloud for its state; ``(row, unknown reason or None)``."""
        if row.site is None or row.site_vm_id is None or BrokerVmState(row.state).is_final:
            return row, None
        available, reason = self.registry.status(row.site)
        if not available:
            return row, reason
        limit = self.config.broker.list_timeout_seconds
        try:
            if row.kind == VmKind.SITE.value:
                provider = self.registry.site_provider(row.site)
                step = None
                if wait is not None:
                    step = max(0.1, min(_WAIT_STEP, deadline - time.monotonic()))
                async with asyncio.timeout(limit + (step or 0.0)):
                    raw = await provider.show(row.site_vm_id, wait=wait, timeout=step)
                fields = _site_fields(raw)
            else:
                async with asyncio.timeout(limit):
                    vm = await self.registry.cloud_provider(row.site).get_vm(row.site_vm_id)
                fields = _cloud_fields(vm)
        except VMNotFound:
            return row, f"site {row.site} does not know this VM any more"
        except SiteFailed as exc:
            return row, f"site {row.site} did not answer: {exc.reason}"
        except TimeoutError:
            return row, f"site {row.site} did not answer within {limit:g}s"
        except SiteOperationRefused as exc:
            return row, f"site {row.site} refused to show the VM: {exc.message}"
        updated = await self._db(self._sync, row.id, fields, row.site)
        return updated, None

    def _sync(self, vm_id: str, fields: dict[str, Any], site: str) -> BrokerVm:
        """Copy what the site or cloud reports; clouds' state changes are logged here
        (sites log their own, merged into the events on reading)."""
        reason = fields.get("state_reason") or "state reported by the provider"
        return self.store.update(
            vm_id,
            reason=f"{site}: {reason}",
            event_site=site,
            log_state=self.registry.is_cloud(site),
            **fields,
        )

    async def list_vms(
        self, principal: Principal, *, every_owner: bool, include_done: bool
    ) -> BrokerVmList:
        """The caller's VMs on every site and cloud, each site asked concurrently."""
        owner = None if (every_owner and principal.is_admin) else principal.account
        rows = await self._db(self.store.list_vms, owner, include_done=include_done)
        by_site: dict[str, list[BrokerVm]] = {}
        for row in rows:
            if row.site and row.site_vm_id and not BrokerVmState(row.state).is_final:
                by_site.setdefault(row.site, []).append(row)
        warnings: list[str] = []
        unknown: dict[str, str] = {}
        updates: list[tuple[str, dict[str, Any], str]] = []

        async def one(site: str, site_rows: list[BrokerVm]) -> None:
            available, reason = self.registry.status(site)
            if not available:
                warnings.append(f"{reason}; its VMs are shown as last known, in state unknown")
                for r in site_rows:
                    unknown[r.id] = reason or "site unavailable"
                return
            try:
                async with asyncio.timeout(self.config.broker.list_timeout_seconds):
                    live = await self._live(site)
            except (SiteFailed, TimeoutError) as exc:
                why = (
                    exc.reason
                    if isinstance(exc, SiteFailed)
                    else (f"no answer within {self.config.broker.list_timeout_seconds:g}s")
                )
                warnings.append(f"site {site} did not answer ({why}); listing is partial")
                for r in site_rows:
                    unknown[r.id] = f"site {site} did not answer: {why}"
                return
            for r in site_rows:
                fields = live.get(r.site_vm_id or "")
                if fields is None:
                    if self.registry.is_cloud(site):
                        updates.append(
                            (r.id, {"state": "done", "state_reason": "instance terminated"}, site)
                        )
                    else:
                        unknown[r.id] = f"site {site} does not list this VM"
                    continue
                updates.append((r.id, fields, site))

        await asyncio.gather(*(one(site, site_rows) for site, site_rows in by_site.items()))
        if updates:
            refreshed = await self._db(self._sync_many, updates)
            rows = [refreshed.get(r.id, r) for r in rows]
        views = [self._view(r, unknown_reason=unknown.get(r.id)) for r in rows]
        return BrokerVmList(vms=views, partial=bool(warnings), warnings=sorted(warnings))

    async def _live(self, site: str) -> dict[str, dict[str, Any]]:
        """Site VM id -> broker fields, for every VM the site or cloud lists."""
        if self.registry.is_cloud(site):
            vms = await self.registry.cloud_provider(site).list_vms()
            return {vm.provider_id: _cloud_fields(vm) for vm in vms}
        raws = await self.registry.site_provider(site).list_all()
        return {raw["id"]: _site_fields(raw) for raw in raws}

    def _sync_many(self, updates: list[tuple[str, dict[str, Any], str]]) -> dict[str, BrokerVm]:
        return {vm_id: self._sync(vm_id, fields, site) for vm_id, fields, site in updates}

    # --- operations -----------------------------------------------------------------

    async def _forwardable(self, principal: Principal, vm_id: str, what: str) -> BrokerVm:
        row = await self._row_for(principal, vm_id)
        if row.state == BrokerVmState.QUEUED.value:
            raise InvalidOperation(f"cannot {what} a queued request (it has not started)")
        if row.kind == VmKind.CLOUD.value:
            raise InvalidOperation(
                f"cannot {what} a VM on public cloud {row.site}; only kill is supported there"
            )
        if row.site is None or row.site_vm_id is None:
            raise InvalidOperation(f"cannot {what} VM {vm_id}: it was never placed")
        available, reason = self.registry.status(row.site)
        if not available:
            raise SiteUnreachable(f"cannot {what} VM {vm_id}: {reason}")
        return row

    async def _site_call(self, row: BrokerVm, call: Awaitable[T]) -> T:
        try:
            return await call
        except SiteFailed as exc:
            raise SiteUnreachable(f"site {row.site} did not answer: {exc.reason}") from exc
        except VMNotFound as exc:
            raise SiteUnreachable(f"site {row.site} does not know this VM any more") from exc
        except SiteOperationRefused as exc:
            error = StratusError(f"site {row.site}: {exc.message}", code=exc.code)
            error.status = exc.status  # the site's 4xx, passed on as it is
            raise error from exc

    async def kill(
        self, principal: Principal, vm_id: str, *, force: bool = False
    ) -> BrokerVmPublic:
        """Kill a VM at its site or cloud (or take a queued request out of the queue).

        Killing a VM that is already done succeeds.  A VM whose site is
        unavailable cannot be killed now (503; nothing changes).
        """
        row = await self._row_for(principal, vm_id)
        if row.state == BrokerVmState.QUEUED.value:
            async with self._queue_lock:
                if vm_id in self.queue:
                    self.queue.cancel(vm_id, f"killed by {principal.account} while queued")
                await self._db(
                    self.store.set_queue_state, vm_id, QueueState.CANCELLED.value, "killed"
                )
                row = await self._db(
                    self.store.update,
                    vm_id,
                    reason=f"removed from the queue by {principal.account} before it started",
                    state=BrokerVmState.DONE.value,
                    state_reason="removed from the queue before it started",
                )
            return self._view(row)
        unplaced = row.site is None or row.site_vm_id is None
        if BrokerVmState(row.state).is_final or (
            unplaced and row.state == BrokerVmState.FAILED.value
        ):
            return self._view(row)
        if row.site is None or row.site_vm_id is None:
            raise InvalidOperation(
                f"VM {vm_id} is being placed right now; kill it again in a moment"
            )
        available, reason = self.registry.status(row.site)
        if not available:
            raise SiteUnreachable(f"cannot kill VM {vm_id} now: {reason}")
        who = f"killed by {principal.account}"
        if row.kind == VmKind.CLOUD.value:
            provider = self.registry.cloud_provider(row.site)
            await self._site_call(row, provider.kill_vm(row.site_vm_id))
            fields: dict[str, Any] = {
                "state": BrokerVmState.DONE.value,
                "state_reason": f"{who}: instance terminated",
                "ready": False,
            }
        else:
            site = self.registry.site_provider(row.site)
            raw = await self._site_call(row, site.kill(row.site_vm_id, force=force))
            if raw is None:
                fields = {"state": "done", "state_reason": f"{who}; the site had no such VM"}
            else:
                fields = _site_fields(raw)
        row = await self._db(self.store.update, vm_id, reason=who, event_site=row.site, **fields)
        self.wake()
        return self._view(row)

    async def _kill_quietly(self, vm_id: str) -> None:
        row = await self._db(self.store.get, vm_id)
        if row is None or row.site is None or row.site_vm_id is None:
            return
        try:
            if row.kind == VmKind.CLOUD.value:
                await self.registry.cloud_provider(row.site).kill_vm(row.site_vm_id)
            else:
                await self.registry.site_provider(row.site).kill(row.site_vm_id)
        except (ProviderError, SiteOperationRefused) as exc:
            log.warning("could not kill %s at %s (the orphan sweep will): %s", vm_id, row.site, exc)

    async def stop(
        self, principal: Principal, vm_id: str, options: dict[str, Any] | None = None
    ) -> BrokerVmPublic:
        """Stop at the site; ``options`` (``{"save": {...}}``) are passed on as they are."""
        row = await self._forwardable(principal, vm_id, "stop")
        assert row.site and row.site_vm_id
        provider = self.registry.site_provider(row.site)
        raw = await self._site_call(row, provider.stop(row.site_vm_id, options))
        row = await self._db(self._sync, vm_id, _site_fields(raw), row.site)
        return self._view(row)

    async def reboot(self, principal: Principal, vm_id: str) -> BrokerVmPublic:
        row = await self._forwardable(principal, vm_id, "reboot")
        assert row.site and row.site_vm_id
        provider = self.registry.site_provider(row.site)
        raw = await self._site_call(row, provider.reboot(row.site_vm_id))
        row = await self._db(self._sync, vm_id, _site_fields(raw), row.site)
        return self._view(row)

    async def console(self, principal: Principal, vm_id: str, tail: int) -> ConsoleOutput:
        row = await self._forwardable(principal, vm_id, "read the console of")
        assert row.site and row.site_vm_id
        provider = self.registry.site_provider(row.site)
        body = await self._site_call(row, provider.console(row.site_vm_id, tail))
        return ConsoleOutput(
            vm_id=vm_id, output=str(body.get("output", "")), truncated=bool(body.get("truncated"))
        )

    async def events(self, principal: Principal, vm_id: str) -> BrokerVmEventList:
        """The broker's events of the VM merged with its site's, oldest first."""
        row = await self._row_for(principal, vm_id)
        events = [
            BrokerVmEventPublic(
                at=e.at,
                from_state=e.from_state,
                to_state=e.to_state,
                reason=e.reason,
                source="broker",
            )
            for e in await self._db(self.store.events, vm_id)
        ]
        warnings: list[str] = []
        if row.kind == VmKind.SITE.value and row.site and row.site_vm_id:
            available, reason = self.registry.status(row.site)
            if not available:
                warnings.append(f"site events not included: {reason}")
            else:
                provider = self.registry.site_provider(row.site)
                try:
                    for e in await provider.events(row.site_vm_id):
                        events.append(
                            BrokerVmEventPublic(
                                at=datetime.fromisoformat(str(e["at"]).replace("Z", "+00:00")),
                                from_state=e.get("from_state"),
                                to_state=e.get("to_state"),
                                reason=str(e.get("reason", "")),
                                source=row.site,
                            )
                        )
                except (ProviderError, SiteOperationRefused, KeyError, ValueError) as exc:
                    warnings.append(f"site events not included: site {row.site}: {exc}")
        events.sort(key=lambda e: e.at)
        return BrokerVmEventList(vm_id=vm_id, events=events, warnings=warnings)

    # --- sites and images -----------------------------------------------------------

    async def heartbeat(self, name: str, report: SiteReport) -> HeartbeatAck:
        """Take a heartbeat of a site already authenticated as ``name``."""
        trusted = self.registry.trusted(name)
        assert trusted is not None
        registered, was_down, at = self.registry.heartbeat(name, report)
        await self._db(
            self.store.save_heartbeat,
            name,
            trusted.dn,
            report.public_url,
            report.model_dump(mode="json"),
            datetime.fromtimestamp(at, UTC),
        )
        if registered:
            log.info("site %s registered from %s", name, report.public_url)
        if was_down:
            log.info("site %s is back", name)
            ids = [vm.id for vm in await self._db(self.store.on_site, name)]
            await self._db(self.store.add_events, ids, f"site {name} is back (heartbeat received)")
        self.wake()
        return HeartbeatAck(
            site=name,
            registered=registered,
            heartbeat_timeout_seconds=self.config.broker.heartbeat_timeout_seconds,
        )

    async def sites(self) -> SiteList:
        counts = await self._db(self.store.active_counts)
        out: list[SitePublic] = []
        for name in self.registry.site_names():
            entry = self.registry.entries[name]
            available, reason = self.registry.status(name)
            report = entry.report
            status = (
                "available"
                if available
                else ("never-registered" if report is None else "unavailable")
            )
            site = SitePublic(
                name=name, kind=VmKind.SITE, status=status, reason=reason, vms=counts.get(name, 0)
            )
            if report is not None and entry.last_heartbeat is not None:
                cap = self.placer.capacity(name)
                hosts = list(cap.hosts) if cap is not None else []
                site.url = report.public_url
                site.last_heartbeat = datetime.fromtimestamp(entry.last_heartbeat, UTC)
                site.hosts = len(hosts)
                site.free_cpus = sum(h.free_cpus for h in hosts)
                site.free_memory_mib = sum(h.free_memory_mib for h in hosts)
                site.largest_free_cpus = max((h.free_cpus for h in hosts), default=0)
                site.largest_free_memory_mib = max((h.free_memory_mib for h in hosts), default=0)
                site.cached_images = sorted(report.cached_images)
                site.location = dict(report.location)
                site.price_per_hour = report.price_per_hour
            out.append(site)
        for cloud in self.config.clouds:
            prices = [s.price_per_hour for s in cloud.sizes.values()]
            out.append(
                SitePublic(
                    name=cloud.name,
                    kind=VmKind.CLOUD,
                    status="available",
                    reason="public cloud for bursting (not health-checked)",
                    cached_images=sorted(cloud.images),
                    price_per_hour=min(prices) if prices else None,
                    vms=counts.get(cloud.name, 0),
                )
            )
        return SiteList(sites=out)

    async def site(self, name: str) -> SitePublic:
        for site in (await self.sites()).sites:
            if site.name == name:
                return site
        raise UnknownSite(f"unknown site {name!r}", details={"known": self.registry.site_names()})

    async def images(self) -> ImageList:
        """Images of every available site (asked live) and the clouds' mapped images."""
        merged: dict[str, ImagePublic] = {}
        warnings: list[str] = []

        async def one(site: str) -> list[dict[str, Any]]:
            try:
                async with asyncio.timeout(self.config.broker.list_timeout_seconds):
                    return await self.registry.site_provider(site).images()
            except (ProviderError, SiteOperationRefused, TimeoutError) as exc:
                warnings.append(f"site {site} did not list its images: {exc or 'timeout'}")
                return []

        names = self.registry.available_sites()
        answers = await asyncio.gather(*(one(s) for s in names))
        for site, site_images in zip(names, answers, strict=True):
            for image in site_images:
                entry = merged.get(image["name"])
                if entry is None:
                    entry = merged[image["name"]] = ImagePublic(
                        name=image["name"],
                        format=str(image.get("format", "")),
                        direct_kernel_boot=bool(image.get("direct_kernel_boot", False)),
                        description=str(image.get("description", "")),
                        available=False,
                        sites=[],
                    )
                if image.get("available", True):
                    entry.available = True
                    entry.sites.append(site)
        for cloud in self.config.clouds:
            for name, image_id in cloud.images.items():
                entry = merged.get(name)
                if entry is None:
                    entry = merged[name] = ImagePublic(
                        name=name,
                        format="cloud",
                        direct_kernel_boot=False,
                        description=f"{cloud.name} image {image_id} (bursting only)",
                        available=True,
                        sites=[],
                    )
                entry.sites.append(cloud.name)
        for name in self.registry.site_names():
            if name not in names:
                _, reason = self.registry.status(name)
                warnings.append(f"{reason}; its images are not listed")
        listed = sorted(merged.values(), key=lambda i: i.name)
        return ImageList(images=listed, partial=bool(warnings), warnings=sorted(warnings))

    # --- background -----------------------------------------------------------------

    async def run_monitor(self) -> None:
        """Forever: note sites that went silent, expire and start queued requests.

        Woken early by heartbeats and kills; the orphan sweep runs in its own
        task (:meth:`run_sweeper`) so a slow site never delays the queue.
        """
        interval = self.config.broker.monitor_interval_seconds
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                # Heartbeats another broker replica received (shared database).
                self.registry.refresh(await self._db(self.store.sites))
                await self.check_sites()
                await self.drain_queue()
            except Exception:
                log.exception("broker monitor pass failed")

    async def run_sweeper(self) -> None:
        """Forever: the orphan sweep every ``orphan_sweep_interval_seconds``."""
        while True:
            await asyncio.sleep(self.config.broker.orphan_sweep_interval_seconds)
            try:
                await self.sweep_orphans()
            except Exception:
                log.exception("orphan sweep failed")

    async def check_sites(self) -> None:
        """Record in their VMs' events that a site became unavailable (once per outage)."""
        for site, reason in self.registry.newly_down():
            log.warning("%s", reason)
            ids = [vm.id for vm in await self._db(self.store.on_site, site)]
            await self._db(
                self.store.add_events,
                ids,
                f"{reason}; the VM is shown as unknown until the site is back (nothing deleted)",
                site=site,
            )

    async def sweep_orphans(self) -> list[str]:
        """Kill VMs of the broker's account that the broker has no record of.

        They come from creates whose answer never arrived (the broker moved on
        to another site).  Only VMs older than ``orphan_grace_seconds`` are
        touched, so a create in flight is never mistaken for one.  Returns
        ``site/id`` of each VM killed.
        """
        grace = self.config.broker.orphan_grace_seconds
        killed: list[str] = []
        now = _now()
        for site in self.registry.available_sites():
            provider = self.registry.site_provider(site)
            try:
                async with asyncio.timeout(self.config.broker.list_timeout_seconds):
                    raws = await provider.list_all()
            except (ProviderError, SiteOperationRefused, TimeoutError) as exc:
                log.info("orphan sweep: site %s not listed: %s", site, exc)
                continue
            known = await self._db(self.store.known_site_ids, site)
            for raw in raws:
                if raw["id"] in known or raw.get("state") in ("done", "failed"):
                    continue
                created = _parse_time(raw.get("created_at"))
                if created is None or (now - created).total_seconds() < grace:
                    continue
                log.warning("orphan sweep: killing VM %s at %s (no broker record)", raw["id"], site)
                with contextlib.suppress(ProviderError, SiteOperationRefused):
                    await provider.kill(raw["id"])
                    killed.append(f"{site}/{raw['id']}")
        for cloud, cloud_provider in self.registry.clouds.items():
            try:
                async with asyncio.timeout(self.config.broker.list_timeout_seconds):
                    vms = await cloud_provider.list_vms()
            except (ProviderError, TimeoutError) as exc:
                log.info("orphan sweep: cloud %s not listed: %s", cloud, exc)
                continue
            known = await self._db(self.store.known_site_ids, cloud)
            for vm in vms:
                if vm.provider_id in known or vm.created_at is None:
                    continue
                if (now - vm.created_at).total_seconds() < grace:
                    continue
                log.warning(
                    "orphan sweep: killing %s on %s (no broker record)", vm.provider_id, cloud
                )
                with contextlib.suppress(ProviderError):
                    await cloud_provider.kill_vm(vm.provider_id)
                    killed.append(f"{cloud}/{vm.provider_id}")
        return killed


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
