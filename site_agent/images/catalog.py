"""The site's bootable images.

Images are configured by the site admin (``[[images]]`` in the site config):
a root disk and optionally a kernel, initrd and command line for direct
kernel boot. Every VM boots from a copy-on-write overlay on the image's disk.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from site_agent.config import ImageConfig


@dataclass(frozen=True)
class BootImage:
    """What a VM needs to boot: resolved, existing files."""

    name: str
    disk: Path
    format: str
    kernel: Path | None
    initrd: Path | None
    cmdline: str | None


class ImagePublic(BaseModel):
    name: str
    format: str
    direct_kernel_boot: bool
    description: str
    available: bool


class ImageList(BaseModel):
    images: list[ImagePublic]


class UnknownImage(LookupError):
    """No image of that name at this site."""


class ImageUnavailable(Exception):
    """The image is configured but its files are missing."""


class ImageCatalog:
    """Looks up configured images by name."""

    def __init__(self, images: Iterable[ImageConfig]) -> None:
        self._images = {image.name: image for image in images}

    def _files(self, image: ImageConfig) -> list[Path]:
        return [p for p in (image.disk, image.kernel, image.initrd) if p is not None]

    def resolve(self, name: str) -> BootImage:
        """The boot files of ``name``: ``UnknownImage`` or ``ImageUnavailable`` otherwise."""
        image = self._images.get(name)
        if image is None:
            raise UnknownImage(name)
        missing = [str(p) for p in self._files(image) if not p.is_file()]
        if missing:
            raise ImageUnavailable(
                f"image {name!r} is missing files on this site: {', '.join(missing)}"
            )
        return BootImage(
            name=image.name,
            disk=image.disk,
            format=image.format,
            kernel=image.kernel,
            initrd=image.initrd,
            cmdline=image.cmdline,
        )

    def public(self) -> list[ImagePublic]:
        return [
            ImagePublic(
                name=image.name,
                format=image.format,
                direct_kernel_boot=image.kernel is not None,
                description=image.description,
                available=all(p.is_file() for p in self._files(image)),
            )
            for image in self._images.values()
        ]
