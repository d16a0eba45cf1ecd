"""The site's image cache: one facade (:class:`ImageCache`) over one module per job.

======================  =====================================================
``images/catalog.py``   boot files; the images of the site config file
``images/registry.py``  register by URL, list, show, delete; check an image
``images/fetcher.py``   first-use download with verification (single flight)
``images/eviction.py``  what is in use; LRU eviction under ``max_bytes``
``images/saving.py``    save as image: a stopped VM's root disk
``images/sources.py``   URL policy, verified streaming fetch
======================  =====================================================

Guarantees (details in each module): an image is verified before any VM
uses it; concurrent first uses make one download; eviction never removes an
image in use (by a non-terminal VM, a volume, or a use in progress); saved
images are never evicted; a stop's save is completed or explicitly dropped.

Cached files are kept in a plain directory (``state_dir/images``, 0755
so QEMU can read the bases), not in a libvirt storage pool: the agent
itself downloads, verifies and flattens images, overlays are made with
``qemu-img``, and a site's hosts may be remote, so a per-host libvirt pool
would add a second inventory without doing any of the work.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

import httpx
from sqlalchemy.engine import Engine

from auth.principal import Principal
from core.resources.images import ImageDeleted, ImagePublic, ImageRegister, ImageState, SaveAs
from site_agent.config import ImageCacheConfig, ImageConfig
from site_agent.errors import InvalidRequest
from site_agent.images.catalog import BootImage, ConfigImages, ImageRef
from site_agent.images.errors import ImageError, ImageNotFound, ImageNotUsable
from site_agent.images.eviction import CacheSpace, UsageSource
from site_agent.images.fetcher import ImageFetcher
from site_agent.images.models import Image
from site_agent.images.registry import ImageRegistry
from site_agent.images.repository import ImageRepository
from site_agent.images.saving import ImageSaver
from site_agent.layout import StateLayout

log = logging.getLogger(__name__)

_IMAGE_DIR = re.compile(r"^[0-9a-f]{32}$")


class ImageCache:
    """Every image of the site: see the module docstring for the guarantees."""

    def __init__(
        self,
        engine: Engine,
        layout: StateLayout,
        config_images: Iterable[ImageConfig],
        policy: ImageCacheConfig,
        http: httpx.AsyncClient,
    ) -> None:
        self.repo = ImageRepository(engine)
        self.layout = layout
        self.config = ConfigImages(config_images)
        self.space = CacheSpace(self.repo, layout, policy)
        self.registry = ImageRegistry(self.repo, layout, self.config, policy, self.space)
        self.fetcher = ImageFetcher(self.repo, layout, self.space, http)
        self.saver = ImageSaver(self.repo, layout, self.config, self.ensure_cached)

    # ----- start-up and shutdown ----------------------------------------------------

    async def start(self) -> None:
        """Prepare the cache after an agent start.

        Leftovers of interrupted downloads and saves are removed,
        ``downloading`` rows go back to ``pending`` (fetched again on next
        use), directories of images that no longer exist are deleted.
        ``saving`` rows are finished or failed by the VM reconciliation.
        Nothing is evicted here: that happens before a download, when every
        usage source (VMs, volumes) is registered.
        """
        await asyncio.to_thread(self._clean_files)
        for row in await asyncio.to_thread(self.repo.downloading):
            await asyncio.to_thread(
                self.repo.change_state,
                row.id,
                ImageState.PENDING,
                "download interrupted by an agent restart; fetched again on next use",
                expect=ImageState.DOWNLOADING,
            )
        rows = await asyncio.to_thread(self.repo.list_all)
        for name in [r.name for r in rows if r.name in self.config]:
            log.warning(
                "image %r is both registered and in the site config; the config entry wins", name
            )

    def _clean_files(self) -> None:
        partial = self.layout.images_partial_dir
        partial.mkdir(mode=0o755, parents=True, exist_ok=True)
        for entry in partial.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        known = {row.id for row in self.repo.list_all()}
        for entry in self.layout.images_dir.iterdir():
            if entry.is_dir() and _IMAGE_DIR.match(entry.name) and entry.name not in known:
                log.info("removing files of deleted image %s", entry.name)
                shutil.rmtree(entry, ignore_errors=True)

    async def close(self) -> None:
        """Stop downloads in progress (their images go back to ``pending``)."""
        await self.fetcher.close()

    # ----- the API: register, list, show, delete ------------------------------------

    async def register(self, principal: Principal, body: ImageRegister) -> ImagePublic:
        return await self.registry.register(principal, body)

    async def list_for(self, principal: Principal) -> list[ImagePublic]:
        return await self.registry.list_for(principal)

    async def get_for(self, principal: Principal, name: str) -> ImagePublic:
        return await self.registry.get_for(principal, name)

    async def delete(self, principal: Principal, name: str) -> ImageDeleted:
        return await self.registry.delete(principal, name)

    # ----- use by VMs and volumes ------------------------------------------------------

    def add_usage_source(self, source: UsageSource) -> None:
        """Register a blocking callable naming images in use (``CacheSpace.add_usage_source``)."""
        self.space.add_usage_source(source)

    async def in_use(self) -> set[str]:
        return await self.space.in_use()

    async def lookup(self, principal: Principal, name: str) -> ImageRef:
        """``ImageRegistry.lookup``: ``principal`` may boot ``name`` now (nothing fetched)."""
        return await self.registry.lookup(principal, name)

    async def check_usable(self, principal: Principal, name: str) -> ImageRef:
        """:meth:`lookup` for an image named in a request body (a VM or volume create).

        An unknown (or invisible) image is a bad value of that request:
        ``InvalidRequest`` naming the field ``image`` (422); an image that
        cannot be used now stays ``ImageNotUsable`` (409).
        """
        try:
            return await self.registry.lookup(principal, name)
        except ImageNotFound as exc:
            raise InvalidRequest(
                f"unknown image {name!r}", field="image", problem="no such image at this site"
            ) from exc

    async def ensure_cached(self, name: str) -> BootImage:
        """The verified boot files of ``name``, downloading them first if needed.

        Config images are used in place; registered ones go through
        ``ImageFetcher.ensure_cached`` (see its errors).
        """
        if name in self.config:
            return await asyncio.to_thread(self.config.boot, name)
        return await self.fetcher.ensure_cached(name)

    async def files_for_use(self, name: str) -> BootImage:
        """:meth:`ensure_cached` for a request that waits for the files (a hot-plug).

        Whatever keeps the image from being used now (a failed download, no
        room in the cache...) is ``ImageNotUsable`` (409 ``image_unavailable``).
        """
        try:
            return await self.ensure_cached(name)
        except ImageNotUsable:
            raise
        except ImageError as exc:
            raise ImageNotUsable(f"image {name!r} cannot be used: {exc}") from exc

    # ----- save as image --------------------------------------------------------------

    async def reserve_save(self, owner: str, save: SaveAs, vm_id: str, base_image: str) -> None:
        await self.saver.reserve(owner, save, vm_id, base_image)

    async def pending_save(self, vm_id: str) -> str | None:
        return await self.saver.pending(vm_id)

    async def pending_saves(self) -> dict[str, str]:
        return await self.saver.every_pending()

    async def drop_save(self, vm_id: str, reason: str) -> str | None:
        return await self.saver.drop(vm_id, reason)

    async def complete_save(self, vm_id: str, root: Path, note: str = "") -> Image:
        return await self.saver.complete(vm_id, root, note)
