"""Volume operations, quotas, and the rules for plugging disks into VMs.

Who may do what:

* a user sees their own volumes and every ``public`` one; site admins see all;
* only the owner (or an admin) updates or deletes a volume; others get
  ``VolumeForbidden`` for a public volume, ``VolumeNotFound`` for a private one;
* anyone may attach a public volume **read-only**; read-write needs the owner;
* a volume attached read-write is attached to exactly one VM; a volume
  attached read-only may be attached (read-only) to any number of VMs;
* the origin of a copy-on-write volume must never change again, so it can
  only be attached read-only, cannot be the copy-on-write source while
  attached read-write, and cannot be deleted while copies exist;
* a volume is deleted only when no VM has it attached (``VolumeBusy``).

Every check-then-change on attachments, dependants and quotas runs under
:attr:`VolumeService.lock`, so concurrent requests cannot both pass a check.
The VM lifecycle holds the same lock while it stores the attachments of a
new VM (lock order: placement lock, then this one; VM lock, then this one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from auth.principal import Principal
from core.idempotency import request_hash
from core.volume_request import VolumeListQuery, VolumeUpdate
from site_agent.compute.driver import DiskSpec
from site_agent.config import QuotaConfig
from site_agent.volumes.errors import (
    IdempotencyKeyReused,
    VolumeBusy,
    VolumeForbidden,
    VolumeInvalid,
    VolumeNotFound,
    VolumeQuotaExceeded,
)
from site_agent.volumes.files import GIB, VolumeFiles
from site_agent.volumes.models import (
    AttachmentPublic,
    VmDisk,
    Volume,
    VolumeAttachment,
    VolumeCreate,
    VolumeIdempotency,
    VolumePublic,
    VolumeState,
)
from site_agent.volumes.repository import VolumeRepository

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Guest devices for extra disks: vda is the root disk, vdb the context seed.
DEVICES = tuple(f"vd{c}" for c in "cdefghijklmnopqrstuvwxyz")
MAX_DISKS_PER_VM = 16


class ImageFile(Protocol):
    """What the image catalog/cache resolves an image name to (``BootImage`` fits)."""

    @property
    def disk(self) -> Path: ...

    @property
    def format(self) -> str: ...


#: The image's local files, fetching it into the cache first if needed.
ImageResolver = Callable[[str], Awaitable[ImageFile]]
#: Check that a principal may use an image now (raises ``core.errors`` otherwise).
ImageCheck = Callable[[Principal, str], Awaitable[object]]


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


class VolumeService:
    """Persistent volumes of the site (see the module docstring for the rules)."""

    def __init__(self, repo: VolumeRepository, files: VolumeFiles, quotas: QuotaConfig) -> None:
        self.repo = repo
        self.files = files
        self.quotas = quotas
        self.lock = asyncio.Lock()
        self._copies: dict[str, asyncio.Task[None]] = {}

    @staticmethod
    async def _db(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    # ----- lookup -------------------------------------------------------------------

    async def get_for(self, principal: Principal, volume_id: str) -> Volume:
        """The volume if the caller may see it (own, public, or admin); else ``VolumeNotFound``."""
        self.files.path(volume_id)  # refuses anything that is not a volume id
        volume = await self._db(self.repo.get, volume_id)
        if volume is None or not (
            principal.is_admin or volume.owner == principal.account or volume.visibility == "public"
        ):
            raise VolumeNotFound(f"no volume with id {volume_id!r}")
        return volume

    async def owned_by(self, principal: Principal, volume_id: str) -> Volume:
        """The volume if the caller may change it; ``VolumeForbidden`` for others' public ones."""
        volume = await self.get_for(principal, volume_id)
        if not (principal.is_admin or volume.owner == principal.account):
            raise VolumeForbidden(
                f"volume {volume_id} belongs to {volume.owner}; only its owner may change it"
            )
        return volume

    async def list_for(self, principal: Principal, query: VolumeListQuery) -> list[Volume]:
        """Visible volumes matching the filters (``all``: admins see private ones of others)."""
        viewer = None if (principal.is_admin and query.all) else principal.account
        rows = await self._db(
            self.repo.list_volumes, viewer, visibility=query.visibility, owner=query.owner
        )
        if query.tag is not None:
            pattern = re.compile(query.tag)
            rows = [v for v in rows if pattern.search(v.tag)]
        return rows

    # ----- create / update / delete ---------------------------------------------

    async def create(
        self,
        principal: Principal,
        request: VolumeCreate,
        check_image: ImageCheck,
        image_files: ImageResolver,
        idempotency_key: str | None = None,
    ) -> Volume:
        """Create a volume: empty, copy-on-write of a volume, or a copy of an image.

        With ``idempotency_key``, a repeat of an earlier request returns the
        volume it made and makes nothing (``IdempotencyKeyReused`` if the
        body differs); the check runs under the creation lock, so concurrent
        repeats make one volume.

        Empty and copy-on-write volumes are ``ready`` on return. For an image,
        ``check_image`` (the caller may use it, it is usable) runs now and the
        volume is ``creating`` while ``image_files`` (which may download the
        image into the cache) and the copy run in the background; it then turns
        ``ready``, or ``failed`` with the reason (e.g. ``size_gib`` below the
        image's size). Raises ``VolumeQuotaExceeded``, ``VolumeInvalid``,
        ``VolumeNotFound``/``VolumeBusy`` for a bad ``cow_of``, or
        ``VolumeFileError``; a failed request leaves no row and no file.
        """
        volume_id = str(uuid.uuid4())
        if request.image is not None:
            await check_image(principal, request.image)
        common: dict[str, Any] = {
            "id": volume_id,
            "owner": principal.account,
            "tag": request.tag,
            "visibility": request.visibility,
        }
        digest = request_hash(request.model_dump(mode="json"))
        async with self.lock:
            if idempotency_key is not None:
                earlier = await self._db(
                    self.repo.find_idempotent, principal.account, idempotency_key
                )
                if earlier is not None:
                    if earlier.request_hash != digest:
                        raise IdempotencyKeyReused(
                            f"Idempotency-Key {idempotency_key!r} was already used with a "
                            "different request body"
                        )
                    return await self.get_for(principal, earlier.volume_id)
            if request.cow_of is not None:
                try:
                    source = await self.get_for(principal, request.cow_of)
                except VolumeNotFound as exc:
                    raise VolumeInvalid(f"cow_of: {exc}") from exc
                size = self._size(request.size_gib, source.size_gib, f"volume {source.id}")
                await self._check_cow_source(source)
                await self._check_quota(principal.account, size)
                await self.files.create_cow(volume_id, source.id, size)
                volume = Volume(**common, origin="volume", cow_of=source.id, size_gib=size)
            else:
                if request.size_gib is None:  # the request model refuses this already
                    raise VolumeInvalid("size_gib is required")
                size = request.size_gib
                await self._check_quota(principal.account, size)
                if request.image is not None:
                    volume = Volume(
                        **common,
                        origin="image",
                        image=request.image,
                        size_gib=size,
                        state=VolumeState.CREATING,
                        state_reason=f"copying image {request.image}",
                    )
                else:
                    await self.files.create_empty(volume_id, size)
                    volume = Volume(**common, size_gib=size)
            record = None
            if idempotency_key is not None:
                record = VolumeIdempotency(
                    owner=principal.account,
                    key=idempotency_key,
                    request_hash=digest,
                    volume_id=volume_id,
                )
            try:
                volume = await self._db(self.repo.insert, volume, record)
            except BaseException:
                await self.files.remove_async(volume_id)
                raise
        if request.image is not None:
            task = asyncio.create_task(self._copy(volume.id, request.image, size, image_files))
            self._copies[volume.id] = task
            task.add_done_callback(lambda _t: self._copies.pop(volume_id, None))
        log.info(
            "volume %s created for %s (%s, %d GiB)", volume.id, volume.owner, volume.origin, size
        )
        return volume

    @staticmethod
    def _size(asked: int | None, minimum: int, source: str) -> int:
        if asked is None:
            return minimum
        if asked < minimum:
            raise VolumeInvalid(
                f"size_gib {asked} is smaller than {source} ({minimum} GiB); give at least that"
            )
        return asked

    async def _check_cow_source(self, source: Volume) -> None:
        if source.state != VolumeState.READY:
            raise VolumeBusy(f"volume {source.id} is {source.state}; it cannot be copied now")
        attached = (await self._db(self.repo.attachments_of_volumes, [source.id])).get(source.id)
        writers = [a.vm_id for a in attached or [] if not a.readonly]
        if writers:
            raise VolumeBusy(
                f"volume {source.id} is attached read-write; detach it before making "
                "copy-on-write volumes of it"
            )

    async def _check_quota(self, owner: str, size_gib: int) -> None:
        count, total = await self._db(self.repo.usage, owner)
        if count + 1 > self.quotas.volumes_count:
            raise VolumeQuotaExceeded(
                f"volume quota exceeded: {owner} has {count} of {self.quotas.volumes_count} "
                "volumes allowed"
            )
        if total + size_gib > self.quotas.volumes_total_gib:
            raise VolumeQuotaExceeded(
                f"volume quota exceeded: {owner} uses {total} GiB; {size_gib} GiB more would "
                f"pass the limit of {self.quotas.volumes_total_gib} GiB"
            )

    async def _copy(
        self, volume_id: str, image_name: str, size_gib: int, image_files: ImageResolver
    ) -> None:
        """Background part of a create from an image: fetch (cache), check size, copy."""
        try:
            image = await image_files(image_name)
            image_bytes = await self.files.virtual_size(image.disk)
            if image_bytes > size_gib * GIB:
                raise VolumeInvalid(
                    f"image {image_name} is {math.ceil(image_bytes / GIB)} GiB; the volume's "
                    f"size_gib {size_gib} is too small for it"
                )
            await self.files.copy_image(volume_id, image.disk, image.format, size_gib)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the image's own errors too (download failed, ...)
            reason = str(exc) or type(exc).__name__
            log.error("volume %s: copying image %s failed: %s", volume_id, image_name, reason)
            with contextlib.suppress(KeyError):
                await self._db(
                    self.repo.update,
                    volume_id,
                    state=VolumeState.FAILED,
                    state_reason=f"copying image {image_name} failed: {reason}",
                )
            return
        with contextlib.suppress(KeyError):  # deleted meanwhile
            await self._db(self.repo.update, volume_id, state=VolumeState.READY, state_reason=None)

    async def wait_ready(self, principal: Principal, volume_id: str, timeout: float) -> Volume:
        """The volume once it is no longer ``creating`` (or after ``timeout`` seconds)."""
        task = self._copies.get(volume_id)
        if task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), timeout)
        return await self.get_for(principal, volume_id)

    async def update(self, principal: Principal, volume_id: str, request: VolumeUpdate) -> Volume:
        """Change tag and/or visibility (owner or admin)."""
        await self.owned_by(principal, volume_id)
        fields = request.model_dump(exclude_none=True)
        async with self.lock:
            if fields.get("visibility") == "private":
                await self._check_no_foreign_users(volume_id)
            return await self._db(self.repo.update, volume_id, **fields)

    async def _check_no_foreign_users(self, volume_id: str) -> None:
        volume = await self._db(self.repo.get, volume_id)
        assert volume is not None
        attached = (await self._db(self.repo.attachments_of_volumes, [volume_id])).get(volume_id)
        others = {a.vm_owner for a in attached or [] if a.vm_owner != volume.owner}
        if others:
            raise VolumeBusy(
                f"volume {volume_id} is attached to VMs of other users; it stays public "
                "until they detach it"
            )

    async def delete(self, principal: Principal, volume_id: str) -> None:
        """Delete the volume and its file (owner or admin). ``VolumeBusy`` while in use."""
        await self.owned_by(principal, volume_id)
        async with self.lock:
            attached = (await self._db(self.repo.attachments_of_volumes, [volume_id])).get(
                volume_id
            )
            if attached:
                where = ", ".join(f"{a.vm_id} ({a.device})" for a in attached)
                raise VolumeBusy(f"volume {volume_id} is attached to VM(s) {where}; detach first")
            children = await self._db(self.repo.children, volume_id)
            if children:
                raise VolumeBusy(
                    f"volume {volume_id} is the origin of copy-on-write volume(s) "
                    f"{', '.join(children)}; delete them first"
                )
            task = self._copies.pop(volume_id, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._db(self.repo.delete, volume_id)
            await self.files.remove_async(volume_id)
        log.info("volume %s deleted by %s", volume_id, principal.account)

    # ----- attachments ----------------------------------------------------------------

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
        """An attachment row (not stored) for plugging the volume into the VM.

        Call while holding :attr:`lock` and store the row before releasing it.
        Applies the rules of the module docstring; ``taken`` are the VM's
        devices in use (the row gets the lowest free one).
        """
        volume = await self.get_for(principal, volume_id)
        if volume.state != VolumeState.READY:
            raise VolumeBusy(f"volume {volume_id} is {volume.state}; it cannot be attached now")
        if not readonly and not (principal.is_admin or volume.owner == principal.account):
            raise VolumeForbidden(
                f"volume {volume_id} belongs to {volume.owner}; others may attach it read-only only"
            )
        attached = (await self._db(self.repo.attachments_of_volumes, [volume_id])).get(
            volume_id, []
        )
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

    async def attachments_of_vm(self, vm_id: str) -> list[VolumeAttachment]:
        return await self._db(self.repo.attachments_of_vm, vm_id)

    async def attachments_of_volumes(
        self, volume_ids: Iterable[str]
    ) -> dict[str, list[VolumeAttachment]]:
        return await self._db(self.repo.attachments_of_volumes, list(volume_ids))

    async def store_attachment(self, attachment: VolumeAttachment) -> VolumeAttachment:
        return await self._db(self.repo.add_attachment, attachment)

    async def drop_attachment(self, attachment: VolumeAttachment) -> None:
        assert attachment.id is not None
        await self._db(self.repo.remove_attachment, attachment.id)

    async def disk_spec(self, attachment: VolumeAttachment, image_files: ImageResolver) -> DiskSpec:
        """How the hypervisor plugs ``attachment`` in (read-only disks are shareable)."""
        if attachment.volume_id is not None:
            path, fmt = self.files.path(attachment.volume_id), "qcow2"
        else:
            assert attachment.image is not None
            image = await image_files(attachment.image)
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

    # ----- views ---------------------------------------------------------------------------

    async def public(self, principal: Principal, volumes: list[Volume]) -> list[VolumePublic]:
        """API views of ``volumes``; attachments to other users' VMs are only counted."""
        attached = await self._db(self.repo.attachments_of_volumes, [v.id for v in volumes])
        result = []
        for volume in volumes:
            rows = attached.get(volume.id, [])
            mine = [r for r in rows if principal.is_admin or r.vm_owner == principal.account]
            result.append(
                VolumePublic(
                    **volume.model_dump(exclude={"state"}),
                    state=VolumeState(volume.state),
                    attached=len(rows),
                    attachments=[
                        AttachmentPublic(vm_id=r.vm_id, device=r.device, readonly=r.readonly)
                        for r in mine
                    ],
                )
            )
        return result

    @staticmethod
    def vm_disk(attachment: VolumeAttachment) -> VmDisk:
        return VmDisk(
            vm_id=attachment.vm_id,
            device=attachment.device,
            kind="volume" if attachment.volume_id is not None else "static",
            volume_id=attachment.volume_id,
            image=attachment.image,
            readonly=attachment.readonly,
        )

    async def close(self) -> None:
        """Cancel image copies in progress (their volumes stay ``creating``; see reconcile)."""
        tasks = list(self._copies.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def fail_interrupted(self) -> int:
        """At start-up: volumes left ``creating`` by a previous run are marked ``failed``."""
        rows = await self._db(self.repo.list_volumes, None)
        count = 0
        for volume in rows:
            if volume.state == VolumeState.CREATING and volume.id not in self._copies:
                await self.files.remove_async(volume.id)
                await self._db(
                    self.repo.update,
                    volume.id,
                    state=VolumeState.FAILED,
                    state_reason="the agent stopped while the image was being copied; delete it",
                )
                count += 1
        return count
