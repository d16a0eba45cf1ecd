"""Volume operations and quotas: create, list, show, change, delete.

Who may do what:

* a user sees their own volumes and every ``public`` one; site admins see all;
* only the owner (or an admin) updates or deletes a volume; others get
  ``VolumeForbidden`` for a public volume, ``VolumeNotFound`` for a private one;
* the origin of a copy-on-write volume cannot be the copy-on-write source
  while attached read-write, and cannot be deleted while copies exist;
* a volume is deleted only when no VM has it attached (``VolumeBusy``);
* attaching volumes to VMs follows the rules of
  :mod:`site_agent.volumes.attachments` (:attr:`VolumeService.attachments`).

Every check-then-change on attachments, dependants and quotas runs under
:attr:`VolumeService.lock`, so concurrent requests cannot both pass a check.
The VM lifecycle holds the same lock while it stores the attachments of a
new VM (lock order: placement lock, then this one; VM lock, then this one).

Each volume records its real owner (``site_agent.owners``): the account, its
identity, groups and FQANs, and ``via``, the broker that created it.
``Idempotency-Key`` on a create uses ``core.idempotency`` (scope
``"volumes"``): a repeat returns the volume the first request made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from auth.principal import Principal
from core.idempotency import request_hash
from core.resources.volumes import (
    AttachmentPublic,
    VolumeCreate,
    VolumeListQuery,
    VolumePublic,
    VolumeState,
    VolumeUpdate,
)
from site_agent.config import QuotaConfig
from site_agent.owners import owner_fields
from site_agent.volumes.attachments import ImageResolver, VolumeAttachments
from site_agent.volumes.errors import (
    VolumeBusy,
    VolumeForbidden,
    VolumeInvalid,
    VolumeNotFound,
    VolumeQuotaExceeded,
)
from site_agent.volumes.files import GIB, VolumeFiles
from site_agent.volumes.models import Volume
from site_agent.volumes.repository import VolumeRepository

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Check that a principal may use an image now (raises a site error otherwise).
ImageCheck = Callable[[Principal, str], Awaitable[object]]


class VolumeService:
    """Persistent volumes of the site (see the module docstring for the rules).

    ``check_image`` and ``image_files`` come from the image cache: whether a
    caller may copy an image now, and the image's files (fetched on first use).
    """

    def __init__(
        self,
        repo: VolumeRepository,
        files: VolumeFiles,
        quotas: QuotaConfig,
        *,
        check_image: ImageCheck,
        image_files: ImageResolver,
    ) -> None:
        self.repo = repo
        self.files = files
        self.quotas = quotas
        self.lock = asyncio.Lock()
        self.attachments = VolumeAttachments(repo, files, self.get_for, image_files)
        self._check_image = check_image
        self._image_files = image_files
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

    async def show(self, principal: Principal, volume_id: str) -> VolumePublic:
        """One volume the caller may see, as the API shows it."""
        return (await self.public(principal, [await self.get_for(principal, volume_id)]))[0]

    async def list_for(
        self, principal: Principal, query: VolumeListQuery, *, via: str | None = None
    ) -> list[VolumePublic]:
        """Visible volumes matching the filters (``all``: admins see private ones of others;
        ``via``: only the volumes a broker of that name created)."""
        viewer = None if (principal.is_admin and query.all) else principal.account
        rows = await self._db(
            self.repo.list_volumes, viewer, visibility=query.visibility, owner=query.owner, via=via
        )
        if query.tag is not None:
            pattern = re.compile(query.tag)
            rows = [v for v in rows if pattern.search(v.tag)]
        return await self.public(principal, rows)

    # ----- create -----------------------------------------------------------------------

    async def create(
        self, principal: Principal, request: VolumeCreate, idempotency_key: str | None = None
    ) -> VolumePublic:
        """Create a volume: empty, copy-on-write of a volume, or a copy of an image.

        With ``idempotency_key``, a repeat of an earlier request returns the
        volume it made and makes nothing (``IdempotencyKeyReused`` if the
        body differs); the check runs under the lock, so concurrent repeats
        make one volume.

        Empty and copy-on-write volumes are ``ready`` on return. For an image,
        the image check (the caller may use it, it is usable) runs now and the
        volume is ``creating`` while the image's files (which may be
        downloaded into the cache) are copied in the background; it then turns
        ``ready``, or ``failed`` with the reason (e.g. ``size_gib`` below the
        image's size). Raises ``VolumeQuotaExceeded``, ``VolumeInvalid``,
        ``VolumeNotFound``/``VolumeBusy`` for a bad ``cow_of``, or
        ``VolumeFileError``; a failed request leaves no row and no file.
        """
        volume_id = str(uuid.uuid4())
        if request.image is not None:
            await self._check_image(principal, request.image)
        common: dict[str, Any] = {
            "id": volume_id,
            **owner_fields(principal),
            "tag": request.tag,
            "visibility": request.visibility,
        }
        digest = request_hash(request.model_dump(mode="json"))
        async with self.lock:
            if idempotency_key is not None:
                earlier = await self._db(
                    self.repo.find_idempotent, principal.account, idempotency_key, digest
                )
                if earlier is not None:
                    return await self.show(principal, earlier)
            volume, size = await self._make(principal, request, common)
            try:
                stored = await self._db(self.repo.insert, volume, idempotency_key, digest)
            except BaseException:
                await self.files.remove_async(volume_id)
                raise
            if stored is not volume:  # another process made it under the same key
                await self.files.remove_async(volume_id)
                return await self.show(principal, stored.id)
        if request.image is not None:
            task = asyncio.create_task(self._copy(volume.id, request.image, size))
            self._copies[volume.id] = task
            task.add_done_callback(lambda _t: self._copies.pop(volume_id, None))
        log.info(
            "volume %s created for %s (%s, %d GiB)", volume.id, volume.owner, volume.origin, size
        )
        return (await self.public(principal, [volume]))[0]

    async def _make(
        self, principal: Principal, request: VolumeCreate, common: dict[str, Any]
    ) -> tuple[Volume, int]:
        """The new row (unsaved) and its size; its file made, except for an image copy."""
        volume_id = common["id"]
        if request.cow_of is not None:
            try:
                source = await self.get_for(principal, request.cow_of)
            except VolumeNotFound as exc:
                raise VolumeInvalid(f"cow_of: {exc}") from exc
            size = self._size(request.size_gib, source.size_gib, f"volume {source.id}")
            await self._check_cow_source(source)
            await self._check_quota(principal.account, size)
            await self.files.create_cow(volume_id, source.id, size)
            return Volume(**common, origin="volume", cow_of=source.id, size_gib=size), size
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
            return volume, size
        await self.files.create_empty(volume_id, size)
        return Volume(**common, size_gib=size), size

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
        attached = await self.attachments.of_volume(source.id)
        if any(not a.readonly for a in attached):
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

    async def _copy(self, volume_id: str, image_name: str, size_gib: int) -> None:
        """Background part of a create from an image: fetch (cache), check size, copy."""
        try:
            image = await self._image_files(image_name)
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

    async def wait_ready(self, principal: Principal, volume_id: str, timeout: float) -> None:
        """Return once the volume is no longer ``creating`` (or after ``timeout`` seconds)."""
        await self.get_for(principal, volume_id)
        task = self._copies.get(volume_id)
        if task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), timeout)

    # ----- update / delete ----------------------------------------------------------------

    async def update(
        self, principal: Principal, volume_id: str, request: VolumeUpdate
    ) -> VolumePublic:
        """Change tag and/or visibility (owner or admin)."""
        await self.owned_by(principal, volume_id)
        fields = request.model_dump(exclude_none=True)
        async with self.lock:
            if fields.get("visibility") == "private":
                await self._check_no_foreign_users(volume_id)
            volume = await self._db(self.repo.update, volume_id, **fields)
        return (await self.public(principal, [volume]))[0]

    async def _check_no_foreign_users(self, volume_id: str) -> None:
        volume = await self._db(self.repo.get, volume_id)
        assert volume is not None
        attached = await self.attachments.of_volume(volume_id)
        if any(a.vm_owner != volume.owner for a in attached):
            raise VolumeBusy(
                f"volume {volume_id} is attached to VMs of other users; it stays public "
                "until they detach it"
            )

    async def delete(self, principal: Principal, volume_id: str) -> None:
        """Delete the volume and its file (owner or admin). ``VolumeBusy`` while in use."""
        await self.owned_by(principal, volume_id)
        async with self.lock:
            attached = await self.attachments.of_volume(volume_id)
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

    # ----- views ---------------------------------------------------------------------------

    async def public(self, principal: Principal, volumes: list[Volume]) -> list[VolumePublic]:
        """API views of ``volumes``; attachments to other users' VMs are only counted."""
        attached = await self.attachments.of_volumes(v.id for v in volumes)
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

    # ----- start-up and shutdown ----------------------------------------------------------

    async def close(self) -> None:
        """Cancel image copies in progress (their volumes stay ``creating``; see below)."""
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
