"""Boot files of an image, and the images of the site configuration file.

:class:`BootImage` is what the VM lifecycle (and volumes made from an image)
get from :meth:`site_agent.images.cache.ImageCache.ensure_cached`: existing,
verified files. :class:`ConfigImages` serves the ``[[images]]`` of the site
config: local files the site admin installed, used in place (not copied into
the cache, never evicted), visible to every user.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from core.resources.images import BootFileInfo, ImagePublic, ImageSource, ImageState
from site_agent.config import ImageConfig
from site_agent.images.errors import ImageNotUsable


def disk_name(fmt: str) -> str:
    """The disk file's name in a cached or saved image's directory (``disk.qcow2``...)."""
    return f"disk.{fmt}"


@dataclass(frozen=True)
class BootImage:
    """What a VM needs to boot: resolved, existing files.

    ``disk`` is the base every VM's qcow2 overlay points at; ``kernel``,
    ``initrd`` and ``cmdline`` are set for direct kernel boot images.
    """

    name: str
    disk: Path
    format: str
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str | None = None

    def files(self) -> list[Path]:
        return [p for p in (self.disk, self.kernel, self.initrd) if p is not None]

    def missing(self) -> list[Path]:
        """Files that do not exist (an empty list for a usable image)."""
        return [p for p in self.files() if not p.is_file()]


@dataclass(frozen=True)
class ImageRef:
    """An image a create request named, checked to exist and be visible to the caller."""

    name: str


class ConfigImages:
    """The ``[[images]]`` entries of the site configuration."""

    def __init__(self, images: Iterable[ImageConfig]) -> None:
        self._images = {image.name: image for image in images}

    def __contains__(self, name: object) -> bool:
        return name in self._images

    def names(self) -> list[str]:
        return list(self._images)

    def boot(self, name: str) -> BootImage:
        """The boot files of ``name``; ``ImageNotUsable`` naming any missing file."""
        image = self._images[name]
        boot = BootImage(
            name=image.name,
            disk=image.disk,
            format=image.format,
            kernel=image.kernel,
            initrd=image.initrd,
            cmdline=image.cmdline,
        )
        missing = boot.missing()
        if missing:
            raise ImageNotUsable(
                f"image {name!r} is missing files on this site: "
                + ", ".join(str(p) for p in missing)
            )
        return boot

    def public(self, name: str, *, admin: bool) -> ImagePublic:
        """The API view of ``name``; local paths are shown to site admins only."""
        image = self._images[name]
        try:
            self.boot(name)
            state, reason = ImageState.READY, "configured in the site configuration file"
        except ImageNotUsable as exc:
            state, reason = ImageState.FAILED, str(exc)

        def size(path: Path) -> int | None:
            try:
                return path.stat().st_size
            except OSError:
                return None

        def file_info(path: Path | None) -> BootFileInfo | None:
            if path is None:
                return None
            url = f"file://{path}" if admin else None
            return BootFileInfo(url=url, size=size(path), sha1=None, sha256=None)

        return ImagePublic(
            name=image.name,
            owner=None,
            public=True,
            source=ImageSource.CONFIG,
            format=image.format,
            state=state,
            state_reason=reason,
            available=state == ImageState.READY,
            direct_kernel_boot=image.kernel is not None,
            url=f"file://{image.disk}" if admin else None,
            size=size(image.disk),
            sha1=None,
            sha256=None,
            kernel=file_info(image.kernel),
            initrd=file_info(image.initrd),
            cmdline=image.cmdline,
            description=image.description,
            cached_bytes=None,
            origin_vm=None,
            base_image=None,
            created_at=None,
            cached_at=None,
            last_used_at=None,
        )
