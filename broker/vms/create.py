"""Creating VMs through the broker.

1. The request is checked (limits, the group, named sites, constraints; the
   VM's volumes are the caller's and all at one site, which the VM is then
   pinned to) and the VM rows are stored with the ``Idempotency-Key`` record
   in one transaction (:mod:`core.idempotency`, scope ``vms``), so a retried
   request returns the same VMs and makes nothing twice.
2. Each VM is placed (:mod:`broker.vms.placing`) as the user: placed at a
   site, burst to a public cloud, queued, or refused; every attempt goes
   into its event log.
3. A refused request leaves nothing: the VMs already made for it are killed
   and the rows and key removed. A VM made at a site whose answer never
   arrived is found by the orphan sweep and killed after a grace period.

Queued VMs are started later by :meth:`VmCreator.start_queued`, as the user
stored with them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from auth.delegation import DelegatedUser
from auth.principal import Principal
from broker.errors import InvalidOperation, LimitExceeded, NotAllowed, VolumeNotFound
from broker.runtime import Runtime, db
from broker.sites.models import ProviderKind
from broker.vms.models import BROKER_FIELDS, BrokerVm, BrokerVmCreate, BrokerVmPublic
from broker.vms.placing import Outcome, Pinned, SpecFor, VmPlacement
from broker.vms.queueing import VmQueue
from broker.vms.views import public
from core.idempotency import request_hash
from core.resources.vms import VmCreate
from core.vm_state import VmState
from federation.errors import ProviderError
from federation.model import Candidate, PlacementDecision, PlacementRequest
from federation.queue import QueuedRequest

log = logging.getLogger(__name__)


class VmCreator:
    """``POST /vms`` and the start of queued VMs (see the module docstring)."""

    def __init__(self, rt: Runtime, placement: VmPlacement, queue: VmQueue) -> None:
        self.rt = rt
        self.placement = placement
        self.queue = queue

    async def _views(self, ids: Sequence[str]) -> list[BrokerVmPublic]:
        return [public(r, self.rt.queue) for r in await db(self.rt.vms.get_many, list(ids))]

    async def create(
        self, principal: Principal, body: BrokerVmCreate, key: str | None
    ) -> list[BrokerVmPublic]:
        """Place ``body.count`` VMs (see the module docstring); idempotent on ``key``."""
        owner = principal.account
        digest = request_hash(body.model_dump(mode="json"))
        if key is not None:
            earlier = await db(self.rt.vms.earlier, owner, key, digest)
            if earlier is not None:
                return await self._views(earlier)
        self._check(principal, body)
        volumes = await self._volumes(owner, principal.is_admin, body)
        pinned = None
        if volumes:
            site = next(iter(volumes.values()))[0]
            pinned = Pinned(site, f"its volumes are at site {site}")
        own = await self.placement.own_images(principal, body)
        request = self.placement.request(principal, body, pinned, own)
        itype, vcpus, memory = body.sizing()
        base = body.name or f"vm-{uuid.uuid4().hex[:8]}"
        spec = body.model_dump(mode="json", exclude_none=True)
        rows = [
            BrokerVm(
                id=str(uuid.uuid4()),
                owner=owner,
                group=body.group,
                name=base if body.count == 1 else f"{base}-{i}",
                image=body.image,
                vcpus=vcpus,
                memory_mib=memory,
                instance_type=itype,
                state=VmState.PENDING.value,
                state_reason="being placed by the broker",
                spec=spec,
            )
            for i in range(body.count)
        ]
        accepted = f"create request accepted from {owner}"
        won = await db(self.rt.vms.insert, rows, accepted, owner=owner, key=key, digest=digest)
        if won is not None:  # a concurrent twin with the same key stored first
            return await self._views(won)
        user = self.rt.user(principal)
        made: list[BrokerVm] = []
        try:
            for row in rows:
                refusal = await self._place(row, request, user, volumes)
                if refusal is not None:
                    raise refusal
                made.append(row)
        except BaseException:
            for row in made:  # placed ones are killed, queued ones leave the queue
                self.queue.drop(row.id)
                await self._kill_quietly(row.id, user)
            await db(self.rt.vms.forget_request, [r.id for r in rows], owner, key)
            raise
        return await self._views([r.id for r in rows])

    def _check(self, principal: Principal, body: BrokerVmCreate) -> None:
        limit = self.rt.config.broker.max_count_per_request
        if body.count > limit:
            raise LimitExceeded(f"count {body.count} is above the broker's limit of {limit}")
        top = self.rt.config.queue.max_priority
        if body.priority > top:
            raise LimitExceeded(f"priority {body.priority} is above the limit of {top}")
        outsider = body.group is not None and body.group not in principal.groups
        if outsider and not principal.is_admin:
            raise NotAllowed(f"you are not a member of group {body.group!r}")

    async def _volumes(
        self, owner: str, admin: bool, body: BrokerVmCreate | VmCreate
    ) -> dict[str, tuple[str, str]]:
        """Broker volume id -> (site, the site's id) for the VM's volumes.

        Every volume must be the owner's (404 like a missing one) and all at
        one site (409): a VM is made where its volumes are.
        """
        wanted = [*body.volumes, *body.readonly_volumes]
        if not wanted:
            return {}
        refs = await db(self.rt.volumes.refs, wanted)
        out: dict[str, tuple[str, str]] = {}
        for volume_id in wanted:
            ref = refs.get(volume_id)
            if ref is None or (ref.owner != owner and not admin):
                raise VolumeNotFound(f"no volume with id {volume_id!r}")
            if ref.site_volume_id is None:
                raise InvalidOperation(f"volume {volume_id} is still being created")
            out[volume_id] = (ref.site, ref.site_volume_id)
        sites = sorted({site for site, _ in out.values()})
        if len(sites) > 1:
            where = ", ".join(f"{v} at {s}" for v, (s, _) in out.items())
            raise InvalidOperation(f"a VM's volumes must all be at one site: {where}")
        return out

    def _spec_for(self, row: BrokerVm, volumes: dict[str, tuple[str, str]]) -> SpecFor:
        """The site's create body for ``row``: the user's fields, one VM, the site's ids."""
        fields = {k: v for k, v in row.spec.items() if k not in BROKER_FIELDS}
        fields.update(count=1, name=row.name)
        for key in ("volumes", "readonly_volumes"):
            fields[key] = [volumes[v][1] for v in fields.get(key) or []]
        base = VmCreate.model_validate(fields)

        def spec_for(candidate: Candidate) -> VmCreate:
            if candidate.network is None:  # no address asked for, or a public cloud
                return base
            return base.model_copy(update={"network": candidate.network})

        return spec_for

    async def _place(
        self,
        row: BrokerVm,
        request: PlacementRequest,
        user: DelegatedUser | None,
        volumes: dict[str, tuple[str, str]],
        *,
        decision: PlacementDecision | None = None,
    ) -> Exception | None:
        """Place one VM and record the outcome; the error to raise when it was refused."""
        from_queue = decision is not None
        placement = await self.placement.place(
            row.id,
            request,
            self._spec_for(row, volumes),
            user,
            decision=decision,
            may_defer=not from_queue,
        )
        if placement.lines:
            await db(
                self.rt.vms.save_events,
                [(row.id, at, site, line) for at, site, line in placement.lines],
            )
        vm = placement.vm
        if placement.outcome in (Outcome.PLACED, Outcome.BURST) and vm is not None:
            provider = self.rt.registry.provider(vm.site)
            price = vm.price_per_hour
            report = self.rt.registry.report(vm.site)
            if price is None and report is not None:
                price = report.price_per_hour * row.vcpus
            await db(
                self.rt.vms.placed,
                row.id,
                vm,
                ProviderKind(provider.kind),
                placement.reason,
                price_per_hour=price,
                estimated_cost=placement.estimated_cost,
            )
            if from_queue:
                self.queue.started(row.id)
            return None
        if placement.outcome is Outcome.QUEUED:
            await self.queue.enqueue(row, request, user, placement.reason)
            return None
        if from_queue:
            await self.queue.requeue(row.id, placement.reason)
            return None
        assert placement.error is not None
        return placement.error

    async def _kill_quietly(self, vm_id: str, user: DelegatedUser | None) -> None:
        row = await db(self.rt.vms.get, vm_id)
        if row is None or row.site is None or row.site_vm_id is None:
            return
        try:
            provider = self.rt.registry.provider(row.site).acting_for(user)
            await provider.kill_vm(row.site_vm_id)
        except ProviderError as exc:
            log.warning("could not kill %s at %s (the orphan sweep will): %s", vm_id, row.site, exc)

    async def start_queued(
        self, item: QueuedRequest, decision: PlacementDecision, user: DelegatedUser | None
    ) -> None:
        """Start a VM the queue drain took out (as the user stored with it)."""
        row = await db(self.rt.vms.get, item.id)
        if row is None:  # its request failed as a whole meanwhile
            self.queue.started(item.id)
            return
        row = await db(
            self.rt.vms.update,
            row.id,
            reason="capacity freed: leaving the queue",
            state=VmState.PENDING.value,
            state_reason="being placed by the broker (from the queue)",
        )
        try:
            admin = False  # a queued VM uses its owner's volumes only
            volumes = await self._volumes(
                row.owner,
                admin,
                VmCreate.model_validate(
                    {k: v for k, v in row.spec.items() if k not in BROKER_FIELDS}
                ),
            )
            await self._place(row, item.request, user, volumes, decision=decision)
        except Exception as exc:
            log.exception("starting queued VM %s failed", item.id)
            await self.queue.requeue(item.id, f"could not start: {exc}")

    async def settle_interrupted(self) -> int:
        """After a restart: VMs the broker was placing when it stopped (not queued, never
        placed) are ``failed``; returns how many."""
        count = 0
        for row in await db(self.rt.vms.list_vms, None, include_done=False):
            if (
                row.site_vm_id is None
                and row.state == VmState.PENDING.value
                and row.id not in self.rt.queue
            ):
                await db(
                    self.rt.vms.update,
                    row.id,
                    state=VmState.FAILED.value,
                    state_reason="the broker restarted while placing this VM",
                    reason="the broker restarted while placing this VM; nothing was kept",
                )
                count += 1
        return count
