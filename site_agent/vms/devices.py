"""A VM's network interface and extra disks: planned at create, plugged in at boot, hot-plugged.

The VM lifecycle (``site_agent.vms.lifecycle``) calls this module at four
points, always holding its own locks:

* **create** (:meth:`VmDevices.check_request`, then :meth:`VmDevices.plan`
  under the placement lock and the volume lock): a lease (address + MAC) per
  VM and an attachment row per volume or static disk, returned unsaved so
  the lifecycle stores them with the VM rows in one transaction;
* **boot** (:meth:`VmDevices.boot`): the NIC, the guest's network-config and
  the extra disks of the domain;
* **end** (:meth:`VmDevices.release`): the lease is freed and the disks are
  detached (volumes are kept: their lifecycle is independent of VMs);
* **hot-plug** (:meth:`VmDevices.attach` / :meth:`VmDevices.detach`).

This is the edge where network-pool, volume and hypervisor errors become
``core.errors`` (HTTP): an unknown network, volume or address outside the pool
is ``422``; an exhausted pool (``no free address in pool X``), a leased
address or a volume in use is ``409``; a foreign public volume asked for
read-write is ``403``.

Guest devices: ``vda`` is the root disk, ``vdb`` the cidata seed, extra disks
take the lowest free of ``vdc``..``vdz`` (read-write volumes first, then
read-only volumes, then static disks, in request order), which is also the
name the guest's kernel gives them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from auth.principal import Principal
from core.errors import Conflict, StratusError, Unavailable, ValidationFailed
from site_agent.compute.driver import DiskSpec, HypervisorDriver, NicSpec
from site_agent.compute.errors import (
    ComputeError,
    DiskNotAttached,
    DomainNotFound,
    HypervisorUnavailable,
)
from site_agent.config import QuotaConfig
from site_agent.context.cidata import NetworkConfig
from site_agent.layout import StateLayout
from site_agent.networks.errors import (
    AddressInUse,
    AddressOutsidePool,
    AddressUnavailable,
    NetworkPoolError,
    PoolExhausted,
)
from site_agent.networks.pools import NetworkPools
from site_agent.networks.repository import LeaseRepository
from site_agent.networks.service import NetworkService
from site_agent.vms.models import Vm, VmCreate
from site_agent.volumes.errors import NotAttached, VolumeError, VolumeNotFound, http_error
from site_agent.volumes.files import VolumeFiles
from site_agent.volumes.models import VolumeAttachment
from site_agent.volumes.repository import VolumeRepository
from site_agent.volumes.service import ImageCheck, ImageFile, ImageResolver, VolumeService


@dataclass(frozen=True)
class BootDevices:
    """What a VM boots with besides its root disk and seed."""

    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    network: NetworkConfig | None = None


def network_error(exc: NetworkPoolError) -> StratusError:
    """The HTTP error for a pool error met while creating a VM."""
    if isinstance(exc, PoolExhausted):
        return Conflict(str(exc), code="no_free_address")
    if isinstance(exc, AddressInUse):
        return Conflict(str(exc), code="address_in_use")
    field = "address" if isinstance(exc, AddressUnavailable) else "network"
    return ValidationFailed(str(exc), details=[{"field": field, "problem": str(exc)}])


def _body_volume_error(exc: VolumeError, field: str) -> StratusError:
    """Volume errors about a volume named in a request body (not the path)."""
    if isinstance(exc, VolumeNotFound):
        return ValidationFailed(str(exc), details=[{"field": field, "problem": str(exc)}])
    return http_error(exc)


def _driver_error(exc: ComputeError, what: str) -> StratusError:
    if isinstance(exc, HypervisorUnavailable):
        return Unavailable(f"{what}: {exc}", code="hypervisor_error")
    if isinstance(exc, DomainNotFound):
        return Conflict(f"{what}: the VM's domain is gone ({exc})", code="invalid_state")
    return Conflict(f"{what}: {exc}", code="device_error")


class VmDevices:
    """Networks and extra disks of VMs (see the module docstring)."""

    def __init__(
        self,
        networks: NetworkService,
        volumes: VolumeService,
        check_image: ImageCheck,
        image_files: ImageResolver,
    ) -> None:
        self.networks = networks
        self.volumes = volumes
        self.check_image = check_image
        self._image_files = image_files

    @classmethod
    def build(
        cls,
        engine: Engine,
        layout: StateLayout,
        networks: NetworkService | None,
        volumes: VolumeService | None,
        *,
        check_image: ImageCheck,
        image_files: ImageResolver,
    ) -> VmDevices:
        """Devices over the given services; a site without them gets no networks, no volumes."""
        return cls(
            networks or NetworkService(LeaseRepository(engine), NetworkPools([], "")),
            volumes
            or VolumeService(
                VolumeRepository(engine), VolumeFiles(layout.volumes_dir), QuotaConfig()
            ),
            check_image,
            image_files,
        )

    async def image_files(self, name: str) -> ImageFile:
        """The image's local files (fetched into the cache if needed); ``409`` if unusable."""
        try:
            return await self._image_files(name)
        except StratusError:
            raise
        except Exception as exc:  # the image cache's own errors (failed download, ...)
            raise Conflict(
                f"image {name!r} cannot be used: {exc}", code="image_unavailable"
            ) from exc

    # ----- create -------------------------------------------------------------------

    async def check_request(self, principal: Principal, request: VmCreate) -> None:
        """Early checks, before placement: the network and volumes exist, images resolve.

        Whether an address or volume is free is decided by :meth:`plan`.
        """
        wants_network = request.network is not None or request.address is not None
        if wants_network or len(self.networks.pools):
            try:
                pool = self.networks.pool(request.network)
            except NetworkPoolError as exc:
                raise network_error(exc) from exc
            if request.address is not None and not pool.contains(request.address):
                raise network_error(
                    AddressOutsidePool(
                        f"address {request.address} is not in pool {pool.name} "
                        f"({pool.first}-{pool.last} or its fixed addresses)"
                    )
                )
        for field, ids in (
            ("volumes", request.volumes),
            ("readonly_volumes", request.readonly_volumes),
        ):
            for volume_id in ids:
                try:
                    await self.volumes.get_for(principal, volume_id)
                except VolumeError as exc:
                    raise _body_volume_error(exc, field) from exc
        for name in request.static_disks:
            await self.check_image(principal, name)

    async def plan(self, principal: Principal, request: VmCreate, vms: list[Vm]) -> list[SQLModel]:
        """Leases and attachment rows for the new ``vms`` (unsaved); sets their network fields.

        Call under the lifecycle's placement lock and :attr:`VolumeService.lock`,
        and store the rows with the VMs before releasing them.
        """
        rows: list[SQLModel] = []
        if len(self.networks.pools):
            try:
                leases = await self.networks.plan(
                    [vm.id for vm in vms], principal.account, request.network, request.address
                )
            except NetworkPoolError as exc:
                raise network_error(exc) from exc
            for vm, lease in zip(vms, leases, strict=True):
                vm.network, vm.address, vm.mac = lease.pool, lease.address, lease.mac
            rows.extend(leases)
        for vm in vms:
            taken: set[str] = set()
            wanted = [(v, False, "volumes") for v in request.volumes]
            wanted += [(v, True, "readonly_volumes") for v in request.readonly_volumes]
            for volume_id, readonly, field in wanted:
                try:
                    row = await self.volumes.plan_attachment(
                        principal, volume_id, vm.id, vm.owner, readonly=readonly, taken=taken
                    )
                except VolumeError as exc:
                    raise _body_volume_error(exc, field) from exc
                taken.add(row.device)
                rows.append(row)
            for image in request.static_disks:
                try:
                    row = self.volumes.plan_static(vm.id, vm.owner, image, taken)
                except VolumeError as exc:
                    raise http_error(exc) from exc
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
        disks = []
        for attachment in await self.volumes.attachments_of_vm(vm_id):
            disks.append(await self.volumes.disk_spec(attachment, self._image_files))
        return BootDevices(disks=tuple(disks), nics=nics, network=network)

    async def release(self, vm_id: str) -> str:
        """Free the VM's lease and detach its disks (the VM ended); a note for its event log."""
        leases = await self.networks.release(vm_id)
        detached = await self.volumes.release_vm(vm_id)
        parts = [f"address {lease.address} released" for lease in leases]
        if detached:
            parts.append(f"{len(detached)} disk(s) detached")
        return "; ".join(parts)

    async def release_finished(self) -> None:
        """Safety net for every reconciliation: nothing stays leased or attached to ended VMs."""
        await self.networks.release_finished()
        await self.volumes.release_finished()

    # ----- hot-plug --------------------------------------------------------------------------

    async def attach(
        self,
        principal: Principal,
        vm: Vm,
        driver: HypervisorDriver,
        *,
        volume_id: str | None = None,
        image: str | None = None,
        readonly: bool = False,
    ) -> VolumeAttachment:
        """Hot-plug a volume (or the static disk ``image``, read-only) into the running ``vm``.

        The caller holds the VM's lock and has checked that the VM runs. The
        attachment is stored before the hypervisor call and removed again if
        that fails, so no other request can take the device or the volume.
        """
        if image is not None:
            await self.check_image(principal, image)
            await self.image_files(image)  # fetched (if needed) before anything is recorded
        async with self.volumes.lock:
            taken = {a.device for a in await self.volumes.attachments_of_vm(vm.id)}
            try:
                if volume_id is not None:
                    row = await self.volumes.plan_attachment(
                        principal, volume_id, vm.id, vm.owner, readonly=readonly, taken=taken
                    )
                else:
                    assert image is not None
                    row = self.volumes.plan_static(vm.id, vm.owner, image, taken)
            except VolumeError as exc:
                raise http_error(exc) from exc
            row = await self.volumes.store_attachment(row)
        try:
            spec = await self.volumes.disk_spec(row, self.image_files)
            await driver.attach_disk(vm.id, spec)
        except ComputeError as exc:
            await self.volumes.drop_attachment(row)
            raise _driver_error(exc, f"attaching at {row.device} failed") from exc
        except BaseException:
            await self.volumes.drop_attachment(row)
            raise
        return row

    async def attachments(self, vm_id: str) -> list[VolumeAttachment]:
        return await self.volumes.attachments_of_vm(vm_id)

    async def volume_attachments(self, volume_id: str) -> list[VolumeAttachment]:
        rows = await self.volumes.attachments_of_volumes([volume_id])
        return rows.get(volume_id, [])

    async def volume_for(self, principal: Principal, volume_id: str) -> None:
        """``404`` unless the caller may see the volume."""
        try:
            await self.volumes.get_for(principal, volume_id)
        except VolumeError as exc:
            raise http_error(exc) from exc

    async def detach(
        self, vm: Vm, driver: HypervisorDriver, attachment: VolumeAttachment
    ) -> VolumeAttachment:
        """Hot-unplug ``attachment`` from the running ``vm`` (the caller holds the VM's lock).

        A disk the domain no longer has is simply forgotten. If the guest does
        not release the device in time the attachment stays (``409``).
        """
        try:
            await driver.detach_disk(vm.id, attachment.device)
        except DiskNotAttached:
            pass
        except ComputeError as exc:
            raise _driver_error(exc, f"detaching {attachment.device} failed") from exc
        await self.volumes.drop_attachment(attachment)
        return attachment

    @staticmethod
    def find(
        attachments: list[VolumeAttachment],
        *,
        device: str | None = None,
        volume_id: str | None = None,
    ) -> VolumeAttachment:
        """The attachment at ``device`` or of ``volume_id``; ``409 not_attached`` if none."""
        for row in attachments:
            if (device is not None and row.device == device) or (
                volume_id is not None and row.volume_id == volume_id
            ):
                return row
        what = f"device {device}" if device is not None else f"volume {volume_id}"
        raise http_error(NotAttached(f"{what} is not attached to this VM"))
