"""Operations on one VM, forwarded to its provider: kill, stop, reboot, console, events, disks.

Each takes the broker's VM id, checks the caller may act on it (the
broker's records: owner, group, admins), and calls the VM's provider as
the caller (:meth:`broker.runtime.Runtime.acting`). An operation the
provider does not offer (a public cloud has no console) is ``409
not_supported``; a VM whose site is unavailable gets ``503
site_unreachable`` and nothing changes; a queued or never placed VM only
knows kill (``409 invalid_operation`` for the rest). Answers carry the
broker's ids (VM, volumes), never the site's alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from auth.principal import Principal
from broker.errors import InvalidOperation, SiteUnreachable, VolumeNotFound
from broker.runtime import Runtime, db
from broker.vms.models import BrokerVm, BrokerVmEventList, BrokerVmEventPublic, BrokerVmPublic
from broker.vms.queueing import VmQueue
from broker.vms.reading import VmReader
from broker.vms.views import public
from broker.volumes.models import BrokerVmDisk, BrokerVmDiskList
from core.resources.images import SaveAs
from core.resources.vms import ConsoleOutput
from core.resources.volumes import DiskAttach, VmDisk
from core.vm_state import VmState, parse_state
from federation.errors import ProviderError, ProviderNotFound
from federation.providers.base import ComputeProvider, Operation


class VmOperations:
    """The forwarded VM operations (see the module docstring)."""

    def __init__(self, rt: Runtime, reader: VmReader, queue: VmQueue) -> None:
        self.rt = rt
        self.reader = reader
        self.queue = queue

    # --- helpers ------------------------------------------------------------------

    async def _placed(self, principal: Principal, vm_id: str, what: str) -> BrokerVm:
        """The caller's VM, if it runs somewhere that can be asked now."""
        row = await self.reader.row_for(principal, vm_id)
        if row.state == VmState.QUEUED.value:
            raise InvalidOperation(f"cannot {what} a queued request (it has not started)")
        if row.site is None or row.site_vm_id is None:
            raise InvalidOperation(f"cannot {what} VM {vm_id}: it was never placed")
        self.rt.registry.usable(row.site, f"{what} VM {vm_id}")
        return row

    def _provider(self, principal: Principal, row: BrokerVm) -> ComputeProvider:
        return self.reader.acting(principal, row)

    @asynccontextmanager
    async def _at_site(self, row: BrokerVm) -> AsyncIterator[None]:
        """A VM its site no longer knows is reported as such (nothing changes here)."""
        try:
            yield
        except ProviderNotFound as exc:
            raise SiteUnreachable(
                f"site {row.site} does not know VM {row.id} any more", details={"site": row.site}
            ) from exc

    # --- kill, stop, reboot -------------------------------------------------------

    async def kill(self, principal: Principal, vm_id: str, *, force: bool) -> BrokerVmPublic:
        """Kill a VM at its provider (or take a queued request out of the queue).

        Killing a VM that is already done succeeds. A VM whose site is
        unavailable cannot be killed now (503; nothing changes).
        """
        row = await self.reader.row_for(principal, vm_id)
        state = parse_state(row.state)
        if state is VmState.QUEUED:
            if self.queue.leaving(vm_id):
                raise InvalidOperation(
                    f"VM {vm_id} is leaving the queue right now; kill it again in a moment"
                )
            return public(await self.queue.cancel(vm_id, principal.account), self.rt.queue)
        unplaced = row.site is None or row.site_vm_id is None
        if state.is_final or (unplaced and state is VmState.FAILED):
            return public(row, self.rt.queue)
        if row.site is None or row.site_vm_id is None:
            raise InvalidOperation(
                f"VM {vm_id} is being placed right now; kill it again in a moment"
            )
        self.rt.registry.usable(row.site, f"kill VM {vm_id} now")
        who = f"killed by {principal.account}"
        vm = await self._provider(principal, row).kill_vm(row.site_vm_id, force=force)
        if vm is None:
            row = await db(
                self.rt.vms.update,
                vm_id,
                reason=who,
                event_site=row.site,
                state=VmState.DONE.value,
                state_reason=f"{who}; {row.site} had no such VM any more",
                ready=False,
            )
        else:
            row = await self.reader.sync(row, vm, reason=who)
        self.rt.wake.set()
        return public(row, self.rt.queue)

    async def stop(self, principal: Principal, vm_id: str, save: SaveAs | None) -> BrokerVmPublic:
        """Clean shutdown at the provider; with ``save`` the root disk becomes a new image
        at the VM's site, owned there by the caller."""
        row = await self._placed(principal, vm_id, "stop")
        assert row.site_vm_id is not None
        async with self._at_site(row):
            vm = await self._provider(principal, row).stop_vm(row.site_vm_id, save=save)
        return public(await self.reader.sync(row, vm), self.rt.queue)

    async def reboot(self, principal: Principal, vm_id: str) -> BrokerVmPublic:
        row = await self._placed(principal, vm_id, "reboot")
        assert row.site_vm_id is not None
        async with self._at_site(row):
            vm = await self._provider(principal, row).reboot_vm(row.site_vm_id)
        return public(await self.reader.sync(row, vm), self.rt.queue)

    # --- console and events -------------------------------------------------------

    async def console(self, principal: Principal, vm_id: str, tail: int) -> ConsoleOutput:
        row = await self._placed(principal, vm_id, "read the console of")
        assert row.site_vm_id is not None
        async with self._at_site(row):
            out = await self._provider(principal, row).console(row.site_vm_id, tail=tail)
        return ConsoleOutput(vm_id=vm_id, output=out.output, truncated=out.truncated)

    async def events(self, principal: Principal, vm_id: str) -> BrokerVmEventList:
        """The broker's events of the VM merged with its provider's, oldest first."""
        row = await self.reader.row_for(principal, vm_id)
        events = [
            BrokerVmEventPublic(
                at=e.at,
                from_state=parse_state(e.from_state) if e.from_state else None,
                to_state=parse_state(e.to_state) if e.to_state else None,
                reason=e.reason,
                source="broker",
            )
            for e in await db(self.rt.vms.events, vm_id)
        ]
        warnings: list[str] = []
        site, site_vm_id = row.site, row.site_vm_id
        if site is not None and site_vm_id is not None:
            provider = self.rt.registry.provider(site)
            available, reason = self.rt.registry.status(site)
            if not provider.supports(Operation.EVENTS):
                pass  # the broker logged this provider's state changes itself
            elif not available:
                warnings.append(f"site events not included: {reason}")
            else:
                try:
                    for e in await self._provider(principal, row).events(site_vm_id):
                        events.append(BrokerVmEventPublic(**e.model_dump(), source=site))
                except ProviderError as exc:
                    warnings.append(f"site events not included: {exc}")
        events.sort(key=lambda e: e.at)
        return BrokerVmEventList(vm_id=vm_id, events=events, warnings=warnings)

    # --- disks --------------------------------------------------------------------

    async def _disk(self, row: BrokerVm, disk: VmDisk) -> BrokerVmDisk:
        """A site's disk with the broker's ids (VM, volume) and the site."""
        assert row.site is not None
        volume_id = disk.volume_id
        if volume_id is not None:
            known = await db(self.rt.volumes.broker_ids, row.site, [volume_id])
            volume_id = known.get(volume_id, volume_id)
        data = disk.model_dump()
        data.update(vm_id=row.id, volume_id=volume_id, site=row.site)
        return BrokerVmDisk.model_validate(data)

    async def disks(self, principal: Principal, vm_id: str) -> BrokerVmDiskList:
        """The volumes and static disks plugged into the VM (broker ids)."""
        row = await self._placed(principal, vm_id, "list the disks of")
        assert row.site_vm_id is not None
        async with self._at_site(row):
            found = await self._provider(principal, row).vm_disks(row.site_vm_id)
        return BrokerVmDiskList(vm_id=vm_id, disks=[await self._disk(row, d) for d in found])

    async def attach(self, principal: Principal, vm_id: str, body: DiskAttach) -> BrokerVmDisk:
        """Hot-plug a volume (the caller's, at the VM's site) or a static disk."""
        row = await self._placed(principal, vm_id, "attach a disk to")
        assert row.site_vm_id is not None and row.site is not None
        if body.volume is not None:
            ref = (await db(self.rt.volumes.refs, [body.volume])).get(body.volume)
            if ref is None or not principal.can_access(ref.owner):
                raise VolumeNotFound(f"no volume with id {body.volume!r}")
            if ref.site != row.site or ref.site_volume_id is None:
                raise InvalidOperation(
                    f"volume {body.volume} is on site {ref.site} and VM {vm_id} is on "
                    f"{row.site}: a volume can only be attached to a VM of its own site"
                )
            body = body.model_copy(update={"volume": ref.site_volume_id})
        # A 404 of the site here may name the disk or the image: passed on as it is.
        disk = await self._provider(principal, row).attach_disk(row.site_vm_id, body)
        return await self._disk(row, disk)

    async def detach(self, principal: Principal, vm_id: str, device: str) -> BrokerVmDisk:
        """Hot-unplug the disk at guest ``device``."""
        row = await self._placed(principal, vm_id, "detach a disk from")
        assert row.site_vm_id is not None
        disk = await self._provider(principal, row).detach_disk(row.site_vm_id, device)
        return await self._disk(row, disk)
