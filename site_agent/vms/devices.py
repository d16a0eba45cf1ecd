"""A VM's network interface and extra disks: planned at create, plugged in at boot, freed at end.

The VM lifecycle calls this module at three points (hot-plug of running VMs
is ``site_agent.vms.hotplug``):

* **create** (:meth:`VmDevices.check_request` early, then
  :meth:`VmDevices.plan` under the placement lock and :attr:`volume_lock`):
  a lease (address + MAC) per VM and an attachment row per volume or static
  disk, returned unsaved so that admission stores them with the VM rows in
  one transaction;
* **boot** (:meth:`VmDevices.boot`): the NIC, the guest's network-config and
  the extra disks of the domain;
* **end** (:meth:`VmDevices.release`): the lease is freed and the disks are
  detached (volumes are kept: their lifecycle is independent of VMs).

Errors: a pool, volume or image named in the create body that does not
exist (or that the caller may not see) is ``InvalidRequest`` naming the
field (422); an exhausted pool, a leased address or a volume in use are the
pool and volume errors themselves (409), a foreign volume asked for
read-write is ``VolumeForbidden`` (403).

Guest devices: ``vda`` is the root disk, ``vdb`` the cidata seed, extra disks
take the lowest free of ``vdc``..``vdz`` (read-write volumes first, then
read-only volumes, then static disks, in request order), which is also the
name the guest's kernel gives them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sqlmodel import SQLModel

from auth.principal import Principal
from core.resources.vms import VmCreate
from site_agent.compute.driver import DiskSpec, NicSpec
from site_agent.context.cidata import NetworkConfig
from site_agent.errors import InvalidRequest
from site_agent.images.cache import ImageCache
from site_agent.networks.errors import AddressOutsidePool, UnknownPool
from site_agent.networks.service import NetworkService
from site_agent.vms.models import Vm
from site_agent.volumes.errors import VolumeNotFound
from site_agent.volumes.service import VolumeService


@dataclass(frozen=True)
class BootDevices:
    """What a VM boots with besides its root disk and seed."""

    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    network: NetworkConfig | None = None


class VmDevices:
    """Networks and extra disks of VMs at create, boot and end (see the module docstring)."""

    def __init__(
        self, networks: NetworkService, volumes: VolumeService, images: ImageCache
    ) -> None:
        self.networks = networks
        self.volumes = volumes
        self.attachments = volumes.attachments
        self.images = images

    @property
    def volume_lock(self) -> asyncio.Lock:
        """The volume service's lock: hold it from :meth:`plan` until the rows are stored."""
        return self.volumes.lock

    # ----- create -------------------------------------------------------------------

    async def check_request(self, principal: Principal, request: VmCreate) -> None:
        """Early checks, before placement: the network and volumes exist, images resolve.

        Whether an address or volume is free is decided by :meth:`plan`.
        """
        wants_network = request.network is not None or request.address is not None
        if wants_network or len(self.networks.pools):
            try:
                pool = self.networks.pool(request.network)
            except UnknownPool as exc:
                raise InvalidRequest(str(exc), field="network") from exc
            if request.address is not None and not pool.contains(request.address):
                raise AddressOutsidePool(
                    f"address {request.address} is not in pool {pool.name} "
                    f"({pool.first}-{pool.last} or its fixed addresses)"
                )
        for field, ids in (
            ("volumes", request.volumes),
            ("readonly_volumes", request.readonly_volumes),
        ):
            for volume_id in ids:
                try:
                    await self.volumes.get_for(principal, volume_id)
                except VolumeNotFound as exc:
                    raise InvalidRequest(str(exc), field=field) from exc
        for name in request.static_disks:
            await self.images.check_usable(principal, name)

    async def plan(self, principal: Principal, request: VmCreate, vms: list[Vm]) -> list[SQLModel]:
        """Leases and attachment rows for the new ``vms`` (unsaved); sets their network fields.

        Call under the placement lock and :attr:`volume_lock`, and store the
        rows with the VMs before releasing them.
        """
        rows: list[SQLModel] = []
        if len(self.networks.pools):
            try:
                leases = await self.networks.plan(
                    [vm.id for vm in vms], principal.account, request.network, request.address
                )
            except UnknownPool as exc:
                raise InvalidRequest(str(exc), field="network") from exc
            for vm, lease in zip(vms, leases, strict=True):
                vm.network, vm.address, vm.mac = lease.pool, lease.address, lease.mac
            rows.extend(leases)
        for vm in vms:
            taken: set[str] = set()
            wanted = [(v, False, "volumes") for v in request.volumes]
            wanted += [(v, True, "readonly_volumes") for v in request.readonly_volumes]
            for volume_id, readonly, field in wanted:
                try:
                    row = await self.attachments.plan_attachment(
                        principal, volume_id, vm.id, vm.owner, readonly=readonly, taken=taken
                    )
                except VolumeNotFound as exc:
                    raise InvalidRequest(str(exc), field=field) from exc
                taken.add(row.device)
                rows.append(row)
            for image in request.static_disks:
                row = self.attachments.plan_static(vm.id, vm.owner, image, taken)
                taken.add(row.device)
                rows.append(row)
        return rows

    # ----- boot / end -----------------------------------------------------------------

    async def boot(self, vm_id: str) -> BootDevices:
        """The NIC, guest network-config and extra disks the VM's domain starts with."""
        nics: tuple[NicSpec, ...] = ()
        network = None
        lease = await self.networks.lease_of(vm_id)
        if lease is not None:
            nic, network = self.networks.boot_config(lease)
            nics = (nic,)
        disks = [await self.attachments.disk_spec(a) for a in await self.attachments.of_vm(vm_id)]
        return BootDevices(disks=tuple(disks), nics=nics, network=network)

    async def release(self, vm_id: str) -> str:
        """Free the VM's lease and detach its disks (the VM ended); a note for its event log."""
        leases = await self.networks.release(vm_id)
        detached = await self.attachments.release_vm(vm_id)
        parts = [f"address {lease.address} released" for lease in leases]
        if detached:
            parts.append(f"{len(detached)} disk(s) detached")
        return "; ".join(parts)

    async def release_finished(self) -> None:
        """Safety net for every reconciliation: nothing stays leased or attached to ended VMs."""
        await self.networks.release_finished()
        await self.attachments.release_finished()
