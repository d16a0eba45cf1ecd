"""Hot-plug: volumes and static disks plugged into, and out of, a running VM.

The rules on who may attach which volume, and how (read-write to one VM
only, read-only to many...), are in ``site_agent.volumes.attachments``;
this module applies them to running VMs. Every hot-plug holds the VM's lock;
the attachment row is stored (under the volume lock) before the hypervisor
call and removed again if that call fails, so no other request can take the
device or the volume meanwhile. A VM that is not running is ``409
invalid_state``; a VM the caller may not see is ``404``.

Hypervisor errors become: host unreachable -> ``HypervisorFailed`` (503),
domain gone -> ``InvalidVmState`` (409), anything else -> ``DeviceFailed``
(409 ``device_error``; e.g. a guest that did not release a device in time,
the attachment then stays).
"""

from __future__ import annotations

import contextlib

from auth.principal import Principal
from core.resources.volumes import VmDisk
from core.vm_state import VmState
from site_agent.compute.driver import HypervisorDriver
from site_agent.compute.errors import (
    ComputeError,
    DiskNotAttached,
    DomainNotFound,
    HypervisorUnavailable,
)
from site_agent.errors import InvalidRequest
from site_agent.images.cache import ImageCache
from site_agent.vms.errors import (
    DeviceFailed,
    HypervisorFailed,
    InvalidVmState,
    VmError,
    VmNotFound,
)
from site_agent.vms.models import Vm
from site_agent.vms.runtime import VmRuntime
from site_agent.volumes.attachments import VolumeAttachments, vm_disk
from site_agent.volumes.errors import NotAttached
from site_agent.volumes.models import VolumeAttachment
from site_agent.volumes.service import VolumeService


def driver_error(exc: ComputeError, what: str) -> VmError:
    """The VM error for a hypervisor error met while plugging a disk in or out."""
    if isinstance(exc, HypervisorUnavailable):
        return HypervisorFailed(f"{what}: {exc}")
    if isinstance(exc, DomainNotFound):
        return InvalidVmState(f"{what}: the VM's domain is gone ({exc})")
    return DeviceFailed(f"{what}: {exc}")


class Hotplug:
    """Disks of running VMs (see the module docstring)."""

    def __init__(self, runtime: VmRuntime, volumes: VolumeService, images: ImageCache) -> None:
        self.rt = runtime
        self.volumes = volumes
        self.attachments: VolumeAttachments = volumes.attachments
        self.images = images

    async def _running(self, principal: Principal, vm_id: str, what: str) -> Vm:
        vm = await self.rt.get_for(principal, vm_id)
        if vm.state != VmState.RUNNING:
            raise InvalidVmState(f"VM {vm_id} is {vm.state}; disks are {what} only while it runs")
        assert vm.host_uri is not None
        return vm

    def _driver(self, vm: Vm) -> HypervisorDriver:
        assert vm.host_uri is not None
        return self.rt.hosts.driver(vm.host_uri)

    async def disks_for(self, principal: Principal, vm_id: str) -> list[VmDisk]:
        """The volumes and static disks plugged into a VM the caller may see."""
        vm = await self.rt.get_for(principal, vm_id)
        return [vm_disk(a) for a in await self.attachments.of_vm(vm.id)]

    async def attach(
        self,
        principal: Principal,
        vm_id: str,
        *,
        volume_id: str | None = None,
        image: str | None = None,
        readonly: bool = False,
    ) -> VmDisk:
        """Hot-plug a volume, or the static disk ``image`` (always read-only), into a running VM."""
        readonly = readonly or image is not None
        async with self.rt.lock(vm_id):
            vm = await self._running(principal, vm_id, "attached")
            if image is not None:
                await self.images.check_usable(principal, image)
                await self.images.files_for_use(image)  # fetched before anything is recorded
            async with self.volumes.lock:
                taken = {a.device for a in await self.attachments.of_vm(vm.id)}
                if volume_id is not None:
                    row = await self.attachments.plan_attachment(
                        principal, volume_id, vm.id, vm.owner, readonly=readonly, taken=taken
                    )
                else:
                    assert image is not None
                    row = self.attachments.plan_static(vm.id, vm.owner, image, taken)
                row = await self.attachments.store(row)
            try:
                spec = await self.attachments.disk_spec(row)
                await self._driver(vm).attach_disk(vm.id, spec)
            except ComputeError as exc:
                await self.attachments.drop(row)
                raise driver_error(exc, f"attaching at {row.device} failed") from exc
            except BaseException:
                await self.attachments.drop(row)
                raise
            what = f"volume {volume_id}" if volume_id else f"static disk {image}"
            mode = "read-only" if row.readonly else "read-write"
            await self.rt.event(vm_id, f"{what} attached at {row.device} ({mode})")
            return vm_disk(row)

    async def detach(
        self,
        principal: Principal,
        vm_id: str,
        *,
        device: str | None = None,
        volume_id: str | None = None,
    ) -> VmDisk:
        """Hot-unplug the disk at ``device`` (or the volume ``volume_id``) from a running VM.

        ``409 not_attached`` if no such disk is attached to it. A disk the
        domain no longer has is simply forgotten.
        """
        async with self.rt.lock(vm_id):
            vm = await self._running(principal, vm_id, "detached")
            row = _find(await self.attachments.of_vm(vm_id), device=device, volume_id=volume_id)
            try:
                await self._driver(vm).detach_disk(vm.id, row.device)
            except DiskNotAttached:
                pass
            except ComputeError as exc:
                raise driver_error(exc, f"detaching {row.device} failed") from exc
            await self.attachments.drop(row)
            what = f"volume {row.volume_id}" if row.volume_id else f"static disk {row.image}"
            await self.rt.event(vm_id, f"{what} detached from {row.device}")
            return vm_disk(row)

    async def detach_volume(
        self, principal: Principal, volume_id: str, vm_id: str | None = None
    ) -> VmDisk:
        """Detach a volume from ``vm_id``, or from the one VM of the caller that has it.

        ``409 not_attached`` if it is attached to none of the caller's VMs;
        ``422`` if it is attached to several and ``vm_id`` is not given.
        """
        await self.volumes.get_for(principal, volume_id)  # 404 unless the caller sees it
        if vm_id is None:
            candidates = []
            for row in await self.attachments.of_volume(volume_id):
                with contextlib.suppress(VmNotFound):
                    candidates.append((await self.rt.get_for(principal, row.vm_id)).id)
            if len(candidates) > 1:
                raise InvalidRequest(
                    f"volume {volume_id} is attached to {len(candidates)} of your VMs; "
                    "say which with vm_id"
                )
            if not candidates:
                raise NotAttached(f"volume {volume_id} is not attached to any of your VMs")
            vm_id = candidates[0]
        return await self.detach(principal, vm_id, volume_id=volume_id)


def _find(
    attachments: list[VolumeAttachment], *, device: str | None, volume_id: str | None
) -> VolumeAttachment:
    """The attachment at ``device`` or of ``volume_id``; ``NotAttached`` if none."""
    for row in attachments:
        if (device is not None and row.device == device) or (
            volume_id is not None and row.volume_id == volume_id
        ):
            return row
    what = f"device {device}" if device is not None else f"volume {volume_id}"
    raise NotAttached(f"{what} is not attached to this VM")
