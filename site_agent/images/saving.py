"""Save as image: a stopped VM's root disk kept as a new image of its owner.

A stop with ``save`` reserves the name at once (:meth:`ImageSaver.reserve`:
a ``saving`` row whose ``origin_vm`` is the VM; ``ImageNameTaken`` if the
name is in use) and, once the guest is off, :meth:`ImageSaver.complete`
flattens the VM's copy-on-write overlay (``qemu-img convert``) into a
standalone qcow2 in the cache, with its size and checksums, and marks the
image ``ready``. A direct-kernel-boot base's kernel, initrd and command line
are kept with it (hard links), so it stays bootable whatever happens to the
base. Until then the save is *pending*; :meth:`ImageSaver.drop` marks it
``failed`` with a reason (a forced kill, a VM that ended before its stop
finished). Saved images have no URL: they are never evicted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from core.db import utcnow
from core.resources.images import ImageSource, ImageState, SaveAs
from site_agent.images.catalog import BootImage, ConfigImages, disk_name
from site_agent.images.errors import ImageError, ImageNameTaken, SaveFailed
from site_agent.images.models import Image
from site_agent.images.repository import ImageRepository
from site_agent.images.sources import digest_file
from site_agent.layout import StateLayout
from site_agent.storage import qemu_img
from site_agent.storage.qemu_img import QemuImgError

log = logging.getLogger(__name__)

#: The boot files of an image, fetched into the cache if needed (the base of a saved VM).
BaseFiles = Callable[[str], Awaitable[BootImage]]


def _link_or_copy(source: Path, dest: Path) -> None:
    """Hard-link ``source`` to ``dest`` (cached files are never modified), else copy it."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)
        dest.chmod(0o644)


class ImageSaver:
    """Pending and completed saves of VM root disks (see the module docstring)."""

    def __init__(
        self,
        repo: ImageRepository,
        layout: StateLayout,
        config: ConfigImages,
        base_files: BaseFiles,
    ) -> None:
        self.repo = repo
        self.layout = layout
        self.config = config
        self._base_files = base_files

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def reserve(self, owner: str, save: SaveAs, vm_id: str, base_image: str) -> None:
        """Claim ``save.name`` for the root disk of ``vm_id``: a ``saving`` row of ``owner``.

        ``ImageNameTaken`` if the name is in use. The row is the VM's pending
        save until :meth:`complete` or :meth:`drop`.
        """
        if save.name in self.config:
            raise ImageNameTaken(save.name)
        row = Image(
            id=uuid.uuid4().hex,
            name=save.name,
            owner=owner,
            public=False,
            source=ImageSource.SAVED,
            format="qcow2",
            description=save.description,
            state=ImageState.SAVING,
            state_reason=f"waiting for VM {vm_id} to stop",
            origin_vm=vm_id,
            base_image=base_image,
        )
        await self._db(self.repo.insert, row)

    async def pending(self, vm_id: str) -> str | None:
        """The name of the image ``vm_id``'s root disk is to be saved as, if any."""
        row: Image | None = await self._db(self.repo.saving_for, vm_id)
        return row.name if row is not None else None

    async def every_pending(self) -> dict[str, str]:
        """Every pending save: VM id -> image name."""
        rows: list[Image] = await self._db(self.repo.saving)
        return {r.origin_vm: r.name for r in rows if r.origin_vm is not None}

    async def drop(self, vm_id: str, reason: str) -> str | None:
        """Mark ``vm_id``'s pending save ``failed`` with ``reason``; its name, or None if none."""
        row: Image | None = await self._db(self.repo.saving_for, vm_id)
        if row is None:
            return None
        dropped = await self._db(
            self.repo.change_state, row.id, ImageState.FAILED, reason, expect=ImageState.SAVING
        )
        return row.name if dropped else None

    async def complete(self, vm_id: str, root: Path, note: str = "") -> Image:
        """Flatten ``root`` (the stopped VM's overlay) into the pending image of ``vm_id``.

        ``SaveFailed`` (the image is then ``failed``) on any error, or if the
        save was dropped meanwhile.
        """
        row: Image | None = await self._db(self.repo.saving_for, vm_id)
        if row is None:
            raise SaveFailed(f"VM {vm_id} has no pending save (it was dropped)")
        work = self.layout.images_partial_dir / f"{row.id}-{uuid.uuid4().hex[:8]}"
        try:
            base = await self._base_files(row.base_image) if row.base_image else None
            await self._db(
                self.repo.change_state,
                row.id,
                ImageState.SAVING,
                f"converting the root disk of VM {vm_id}",
                expect=ImageState.SAVING,
            )
            fields = await self._flatten(root, base, work)
            final = self.layout.image_dir(row.id)
            await asyncio.to_thread(shutil.rmtree, final, True)
            os.rename(work, final)
            reason = f"saved from VM {vm_id} ({fields['size']} bytes){note}"
            stored = await self._db(
                self.repo.change_state,
                row.id,
                ImageState.READY,
                reason,
                expect=ImageState.SAVING,
                cached_at=utcnow(),
                **fields,
            )
            if not stored:
                await asyncio.to_thread(shutil.rmtree, final, True)
                raise SaveFailed(f"the save as image {row.name!r} was dropped meanwhile")
        except (QemuImgError, OSError, ImageError) as exc:
            if isinstance(exc, SaveFailed):
                raise
            reason = f"save failed: {exc}"
            await self._db(
                self.repo.change_state, row.id, ImageState.FAILED, reason, expect=ImageState.SAVING
            )
            raise SaveFailed(f"saving image {row.name!r} failed: {exc}") from exc
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        saved: Image | None = await self._db(self.repo.get, row.id)
        assert saved is not None
        log.info("image %r saved from VM %s", saved.name, vm_id)
        return saved

    async def _flatten(self, root: Path, base: BootImage | None, work: Path) -> dict[str, Any]:
        """Write the image's files into ``work``; the row fields that describe them."""
        work.mkdir(mode=0o755)
        work.chmod(0o755)
        disk = work / disk_name("qcow2")
        await qemu_img.convert(root, disk, "qcow2")
        disk.chmod(0o644)
        digests = await asyncio.to_thread(digest_file, disk)
        fields: dict[str, Any] = {
            "size": digests.size,
            "sha1": digests.sha1,
            "sha256": digests.sha256,
            "cmdline": base.cmdline if base else None,
        }
        total = digests.size
        for role in ("kernel", "initrd"):
            source = getattr(base, role) if base else None
            if source is None:
                continue
            await asyncio.to_thread(_link_or_copy, source, work / role)
            d = await asyncio.to_thread(digest_file, work / role)
            fields[role] = {"url": None, "size": d.size, "sha1": d.sha1, "sha256": d.sha256}
            total += d.size
        fields["cached_bytes"] = total
        return fields
