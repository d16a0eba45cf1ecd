"""Which disk is plugged into which VM: the attachment rules, rows and hypervisor specs.

An attachment is a volume, or a static disk (an image, always read-only),
plugged into a VM at a guest device. The rules (who may attach what):

* anyone may attach a volume they see (their own, or a public one)
  **read-only**; read-write needs its owner (or an admin);
* a volume attached read-write is attached to exactly one VM; a volume
  attached read-only may be attached (read-only) to any number of VMs;
* the origin of a copy-on-write volume must never change again, so it is
  only ever attached read-only;
* a volume that is not ``ready`` (an image still being copied in) is not
  attached at all.

Every check-then-change runs under the volume service's lock (the caller
holds it), so two requests cannot both pass a check; rows are planned here
and stored by the caller in the same critical section (with the VM rows, for
a create: ``site_agent.vms.admission``).

Guest devices: ``vda`` is the root disk, ``vdb`` the context seed; extra
disks take the lowest free of ``vdc``..``vdz`` (:func:`next_device`), which
is also the name the guest's kernel gives them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from auth.principal import Principal
from core.resources.volumes import VmDisk, VolumeState
from site_agent.compute.driver import DiskSpec
from site_agent.volumes.errors import VolumeBusy, VolumeForbidden
from site_agent.volumes.files import VolumeFiles
from site_agent.volumes.models import Volume, VolumeAttachment
from site_agent.volumes.repository import VolumeRepository

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Guest devices for extra disks: vda is the root disk, vdb the context seed.
DEVICES = tuple(f"vd{c}" for c in "cdefghijklmnopqrstuvwxyz")
MAX_DISKS_PER_VM = 16


class ImageFile(Protocol):
    """What the image cache resolves an image name to (``BootImage`` fits)."""

    @property
    def disk(self) -> Path: ...

    @property
    def format(self) -> str: ...


#: The image's local files, fetching it into the cache first if needed.
ImageResolver = Callable[[str], Awaitable[ImageFile]]
#: The volume if the principal may see it; ``VolumeNotFound`` otherwise.
VolumeLookup = Callable[[Principal, str], Awaitable[Volume]]


def next_device(taken: Iterable[str]) -> str:
    """The lowest free guest device from ``vdc`` on; ``VolumeBusy`` when the VM is full.

    Linux names virtio disks in the order it finds them, reusing the lowest
    free letter, and the context seed is always ``vdb``: so the device chosen
    here is also the name the guest gives the disk.
    """
    used = set(taken)
    if len(used & set(DEVICES)) >= MAX_DISKS_PER_VM:
        raise VolumeBusy(f"the VM already has {MAX_DISKS_PER_VM} extra disks")
    for device in DEVICES:
        if device not in used:
            return device
    raise VolumeBusy("no free guest device")  # pragma: no cover - bounded above


def vm_disk(attachment: VolumeAttachment) -> VmDisk:
    """The API view of an attachment."""
    return VmDisk(
        vm_id=attachment.vm_id,
        device=attachment.device,
        kind="volume" if attachment.volume_id is not None else "static",
        volume_id=attachment.volume_id,
        image=attachment.image,
        readonly=attachment.readonly,
    )


class VolumeAttachments:
    """Attachment rules and rows (see the module docstring)."""

    def __init__(
        self,
        repo: VolumeRepository,
        files: VolumeFiles,
        lookup: VolumeLookup,
        image_files: ImageResolver,
    ) -> None:
        self.repo = repo
        self.files = files
        self._lookup = lookup
        self._image_files = image_files

    @staticmethod
    async def _db(fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def plan_attachment(
        self,
        principal: Principal,
        volume_id: str,
        vm_id: str,
        vm_owner: str,
        *,
        readonly: bool,
        taken: Iterable[str],
    ) -> VolumeAttachment:
        """An attachment row (not stored) plugging the volume into the VM, by the rules above.

        Call while holding the volume lock and store the row before releasing
        it; ``taken`` are the VM's devices in use (the row gets the lowest
        free one). ``VolumeNotFound``, ``VolumeForbidden`` or ``VolumeBusy``.
        """
        volume = await self._lookup(principal, volume_id)
        if volume.state != VolumeState.READY:
            raise VolumeBusy(f"volume {volume_id} is {volume.state}; it cannot be attached now")
        if not readonly and not (principal.is_admin or volume.owner == principal.account):
            raise VolumeForbidden(
                f"volume {volume_id} belongs to {volume.owner}; others may attach it read-only only"
            )
        attached = await self.of_volume(volume_id)
        for row in attached:
            if row.vm_id == vm_id:
                raise VolumeBusy(
                    f"volume {volume_id} is already attached to this VM at {row.device}"
                )
        if not readonly and attached:
            raise VolumeBusy(
                f"volume {volume_id} is attached to {len(attached)} other VM(s); a volume is "
                "attached read-write to one VM only (attach it read-only to share it)"
            )
        if readonly and any(not row.readonly for row in attached):
            raise VolumeBusy(f"volume {volume_id} is attached read-write to another VM")
        origins: set[str] = await self._db(self.repo.with_children, [volume_id])
        if not readonly and origins:
            raise VolumeBusy(
                f"volume {volume_id} is the origin of copy-on-write volumes; it can only be "
                "attached read-only"
            )
        return VolumeAttachment(
            vm_id=vm_id,
            vm_owner=vm_owner,
            volume_id=volume_id,
            device=next_device(taken),
            readonly=readonly,
        )

    @staticmethod
    def plan_static(
        vm_id: str, vm_owner: str, image: str, taken: Iterable[str]
    ) -> VolumeAttachment:
        """An attachment row (not stored) for the static disk ``image`` (always read-only)."""
        return VolumeAttachment(
            vm_id=vm_id, vm_owner=vm_owner, image=image, device=next_device(taken), readonly=True
        )

    async def of_vm(self, vm_id: str) -> list[VolumeAttachment]:
        """The VM's attachments, by device."""
        return await self._db(self.repo.attachments_of_vm, vm_id)

    async def of_volume(self, volume_id: str) -> list[VolumeAttachment]:
        """Every current attachment of the volume (anyone's VMs)."""
        rows = await self.of_volumes([volume_id])
        return rows.get(volume_id, [])

    async def of_volumes(self, volume_ids: Iterable[str]) -> dict[str, list[VolumeAttachment]]:
        """Current attachments of each of ``volume_ids`` (ids without any are absent)."""
        return await self._db(self.repo.attachments_of_volumes, list(volume_ids))

    async def store(self, attachment: VolumeAttachment) -> VolumeAttachment:
        return await self._db(self.repo.add_attachment, attachment)

    async def drop(self, attachment: VolumeAttachment) -> None:
        assert attachment.id is not None
        await self._db(self.repo.remove_attachment, attachment.id)

    async def disk_spec(self, attachment: VolumeAttachment) -> DiskSpec:
        """How the hypervisor plugs ``attachment`` in (read-only disks are shareable).

        A static disk's image is fetched into the cache first if needed.
        """
        if attachment.volume_id is not None:
            path, fmt = self.files.path(attachment.volume_id), "qcow2"
        else:
            assert attachment.image is not None
            image = await self._image_files(attachment.image)
            path, fmt = image.disk, image.format
        return DiskSpec(
            path=path,
            target=attachment.device,
            format=fmt,
            readonly=attachment.readonly,
            shareable=attachment.readonly,
        )

    async def release_vm(self, vm_id: str) -> list[VolumeAttachment]:
        """Forget every attachment of ``vm_id`` (the VM ended): its volumes stay, detached."""
        rows = await self._db(self.repo.release_vm, vm_id)
        for row in rows:
            log.info("VM %s ended: %s detached", vm_id, row.volume_id or f"static {row.image}")
        return rows

    async def release_finished(self) -> int:
        """Forget the attachments of VMs already ``done``/``failed`` (safety net)."""
        count = await self._db(self.repo.release_finished)
        if count:
            log.warning("detached %d disk(s) of finished VMs", count)
        return count
