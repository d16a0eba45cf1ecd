"""The images a site offers: register by URL, list, show, delete, and check one for a VM.

Images of the site configuration file are served by
:class:`~site_agent.images.catalog.ConfigImages` (used in place, visible to
all). Registered and saved images are rows of the ``images`` table; names
are unique across both. Who may do what (docs/images.md): anyone registers
``http(s)://`` images, private to them; only site admins register ``file://``
URLs and public images; the owner or a site admin deletes. An image's URL is
shown to its owner and site admins only.

Registering fetches nothing (``site_agent.images.fetcher`` downloads on
first use); deleting is refused while a download or save runs, or while a
VM or volume uses the image (asked under the cache's lock, so no use can
start in between).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from collections.abc import Callable
from typing import Any

from auth.principal import Principal
from core.resources.images import (
    BootFileInfo,
    ImageDeleted,
    ImagePublic,
    ImageRegister,
    ImageSource,
    ImageState,
)
from site_agent.config import ImageCacheConfig
from site_agent.images.catalog import ConfigImages, ImageRef
from site_agent.images.errors import (
    ImageBusy,
    ImageConfigured,
    ImageForbidden,
    ImageInUse,
    ImageNameTaken,
    ImageNotFound,
    ImageNotUsable,
    ImageTooLarge,
    SourceRefused,
)
from site_agent.images.eviction import CacheSpace
from site_agent.images.models import Image
from site_agent.images.repository import ImageRepository
from site_agent.images.sources import check_url, local_path, redact
from site_agent.layout import StateLayout

log = logging.getLogger(__name__)


def image_public(principal: Principal, row: Image) -> ImagePublic:
    """The API view of a registered or saved image, for ``principal``."""
    own = principal.is_admin or row.owner == principal.account

    def file_info(data: dict[str, Any] | None) -> BootFileInfo | None:
        if data is None:
            return None
        info = BootFileInfo.model_validate({"url": None, **data})
        return info if own else info.model_copy(update={"url": None})

    return ImagePublic(
        name=row.name,
        owner=row.owner,
        public=row.public,
        source=ImageSource(row.source),
        format=row.format,
        state=ImageState(row.state),
        state_reason=row.state_reason,
        available=row.state in (ImageState.PENDING, ImageState.DOWNLOADING, ImageState.READY),
        direct_kernel_boot=row.kernel is not None,
        url=row.url if own else None,
        size=row.size,
        sha1=row.sha1,
        sha256=row.sha256,
        kernel=file_info(row.kernel),
        initrd=file_info(row.initrd),
        cmdline=row.cmdline,
        description=row.description,
        cached_bytes=row.cached_bytes,
        origin_vm=row.origin_vm,
        base_image=row.base_image,
        created_at=row.created_at,
        cached_at=row.cached_at,
        last_used_at=row.last_used_at,
    )


class ImageRegistry:
    """Register, list, show, delete and check images (see the module docstring)."""

    def __init__(
        self,
        repo: ImageRepository,
        layout: StateLayout,
        config: ConfigImages,
        policy: ImageCacheConfig,
        space: CacheSpace,
    ) -> None:
        self.repo = repo
        self.layout = layout
        self.config = config
        self.policy = policy
        self.space = space

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    @staticmethod
    def _visible(principal: Principal, row: Image) -> bool:
        return row.public or principal.can_access(row.owner)

    @staticmethod
    def _check_source(url: str, *, admin: bool) -> str:
        checked = check_url(url, admin=admin)
        if checked.startswith("file://"):
            path = local_path(checked)
            if not path.is_file():
                raise SourceRefused(f"{path} is not a regular file on this site")
        return checked

    async def register(self, principal: Principal, body: ImageRegister) -> ImagePublic:
        """Register an image to be downloaded on first use; nothing is fetched now.

        Refused (nothing stored): a ``file://`` URL or ``public`` from a
        non-admin (``ImageForbidden``), a bad URL or missing local file
        (``SourceRefused``), files larger than the cache
        (``ImageTooLarge``), a name in use (``ImageNameTaken``).
        """
        if body.public and not principal.is_admin:
            raise ImageForbidden("only site admins register public images")
        admin = principal.is_admin
        url = self._check_source(body.url, admin=admin)
        boot_files: dict[str, dict[str, Any] | None] = {}
        for role, source in (("kernel", body.kernel), ("initrd", body.initrd)):
            if source is None:
                boot_files[role] = None
                continue
            checked = self._check_source(source.url, admin=admin)
            boot_files[role] = source.model_copy(update={"url": checked}).model_dump()
        total = body.size + sum(s.size for s in (body.kernel, body.initrd) if s is not None)
        if total > self.policy.max_bytes:
            raise ImageTooLarge(
                f"image files total {total} bytes, more than this site's image cache"
                f" ({self.policy.max_bytes} bytes)"
            )
        if body.name in self.config:
            raise ImageNameTaken(body.name)
        row = Image(
            id=uuid.uuid4().hex,
            name=body.name,
            owner=principal.account,
            public=body.public,
            source=ImageSource.URL,
            format=body.format,
            url=url,
            size=body.size,
            sha1=body.sha1,
            sha256=body.sha256,
            kernel=boot_files["kernel"],
            initrd=boot_files["initrd"],
            cmdline=body.cmdline,
            description=body.description,
            state=ImageState.PENDING,
            state_reason="registered; downloaded and verified on first use",
        )
        await self._db(self.repo.insert, row)
        log.info("image %r registered by %s from %s", body.name, principal.account, redact(url))
        return image_public(principal, row)

    async def list_for(self, principal: Principal) -> list[ImagePublic]:
        """Images the caller may boot: public ones, their own, every one for site admins."""
        views = [self.config.public(n, admin=principal.is_admin) for n in self.config.names()]
        rows: list[Image] = await self._db(self.repo.list_all)
        views += [
            image_public(principal, r)
            for r in rows
            if r.name not in self.config and self._visible(principal, r)
        ]
        return sorted(views, key=lambda v: v.name)

    async def row_for(self, principal: Principal, name: str) -> Image:
        """The registered image ``name`` if the caller may see it; else ``ImageNotFound``."""
        row: Image | None = await self._db(self.repo.by_name, name)
        if row is None or not self._visible(principal, row):
            raise ImageNotFound(name)
        return row

    async def get_for(self, principal: Principal, name: str) -> ImagePublic:
        """One image the caller may see; ``ImageNotFound`` otherwise."""
        if name in self.config:
            return self.config.public(name, admin=principal.is_admin)
        return image_public(principal, await self.row_for(principal, name))

    async def delete(self, principal: Principal, name: str) -> ImageDeleted:
        """Delete an image and its cached files (its owner or a site admin).

        ``ImageConfigured`` for a config-file image, ``ImageForbidden`` for
        someone else's public image, ``ImageBusy`` while it downloads or is
        being saved, ``ImageInUse`` while a non-terminal VM or a volume uses it.
        """
        if name in self.config:
            raise ImageConfigured(
                f"image {name!r} is defined in the site configuration file; remove it there"
            )
        async with self.space.lock:
            row = await self.row_for(principal, name)
            if not principal.can_access(row.owner):
                raise ImageForbidden(f"image {name!r} belongs to {row.owner}")
            if row.state in (ImageState.DOWNLOADING, ImageState.SAVING):
                raise ImageBusy(f"image {name!r} is {row.state}; try again when it has finished")
            if name in await self.space.in_use():
                raise ImageInUse(f"image {name!r} is in use by a VM or a volume")
            await self._db(self.repo.delete, row.id)
            await asyncio.to_thread(shutil.rmtree, self.layout.image_dir(row.id), True)
        log.info("image %r deleted by %s", name, principal.account)
        return ImageDeleted(name=name, freed_bytes=row.cached_bytes or 0)

    async def lookup(self, principal: Principal, name: str) -> ImageRef:
        """Check, without fetching anything, that ``principal`` can boot ``name`` now.

        ``ImageNotFound`` if there is no such image or the caller may not see
        it; ``ImageNotUsable`` if it ``failed``, is still being saved, or (a
        config image) misses files.
        """
        if name in self.config:
            self.config.boot(name)
            return ImageRef(name)
        row = await self.row_for(principal, name)
        if row.state == ImageState.FAILED:
            raise ImageNotUsable(
                f"image {name!r} failed: {row.state_reason}; delete and register it again"
            )
        if row.state == ImageState.SAVING:
            raise ImageNotUsable(f"image {name!r} is still being saved from VM {row.origin_vm}")
        return ImageRef(name)
