"""Volume files: ``state_dir/volumes/<volume-id>.qcow2`` (directory mode 0755).

Paths are made from volume ids only, and an id must be a canonical UUID, so
no request value can name a file elsewhere (``../`` and the like are refused
with ``VolumeNotFound`` before any file is touched). Every volume is qcow2:

* empty: ``qemu-img create`` (sparse: takes no space until written);
* copy-on-write of another volume: a qcow2 overlay whose backing file is
  the source volume's file (the source must then never be written again:
  the service only lets such origins be attached read-only);
* from an image: ``qemu-img convert`` into a standalone qcow2 (no backing
  file, so the image may leave the cache later), grown to the asked size.
  The copy is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from site_agent.storage.qemu_img import (
    QemuImgError,
    create_blank,
    create_overlay,
    info,
    resize,
)
from site_agent.storage.qemu_img import (
    copy_image as qemu_copy_image,
)
from site_agent.volumes.errors import VolumeFileError, VolumeNotFound

GIB = 1024**3
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class VolumeFiles:
    """The volume directory and the qemu-img operations on its files."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def prepare(self) -> None:
        """Create the directory (mode 0755, so QEMU can reach the files). Idempotent."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)

    def path(self, volume_id: str) -> Path:
        """The file of ``volume_id``; ``VolumeNotFound`` for anything but a canonical UUID."""
        if not isinstance(volume_id, str) or not _UUID.fullmatch(volume_id):
            raise VolumeNotFound(f"no volume with id {volume_id!r}")
        return self.root / f"{volume_id}.qcow2"

    def _partial(self, volume_id: str) -> Path:
        return self.root / f".{volume_id}.partial"

    async def create_empty(self, volume_id: str, size_gib: int) -> None:
        """A sparse empty qcow2 of ``size_gib``."""

        async def work(partial: Path) -> None:
            await create_blank(partial, size_gib * GIB)

        await self._make(volume_id, work)

    async def create_cow(self, volume_id: str, source_id: str, size_gib: int) -> None:
        """A qcow2 overlay on ``source_id``'s file, ``size_gib`` large (>= the source)."""
        source = self.path(source_id)

        async def work(partial: Path) -> None:
            await create_overlay(source, "qcow2", partial, size_gib * GIB)

        await self._make(volume_id, work)

    async def copy_image(
        self, volume_id: str, image_file: Path, image_format: str, size_gib: int
    ) -> None:
        """A standalone qcow2 copy of ``image_file``, grown to ``size_gib``."""

        async def work(partial: Path) -> None:
            await qemu_copy_image(image_file, image_format, partial)
            if (await self.virtual_size(partial)) < size_gib * GIB:
                await resize(partial, size_gib * GIB)

        await self._make(volume_id, work)

    async def _make(self, volume_id: str, work: Callable[[Path], Awaitable[None]]) -> None:
        """Write the file under a temporary name with ``work``, then rename it into place.

        On any error (or cancellation) the partial file is removed.
        """
        target = self.path(volume_id)
        partial = self._partial(volume_id)
        try:
            await work(partial)
            partial.chmod(0o644)
            partial.rename(target)
        except QemuImgError as exc:
            raise VolumeFileError(f"qemu-img failed: {exc}") from exc
        except OSError as exc:
            raise VolumeFileError(f"volume file: {exc}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()

    async def virtual_size(self, path: Path) -> int:
        """The virtual size in bytes of the disk image ``path``."""
        try:
            data = await info(path)
        except QemuImgError as exc:
            raise VolumeFileError(f"qemu-img info {path.name}: {exc}") from exc
        return int(data["virtual-size"])

    def remove(self, volume_id: str) -> None:
        """Delete the volume's file (and any partial copy); missing files are fine."""
        for path in (self.path(volume_id), self._partial(volume_id)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def remove_async(self, volume_id: str) -> None:
        await asyncio.to_thread(self.remove, volume_id)
