"""Fetching a registered image into the cache on its first use, verified before any VM sees it.

* **verified before use**: a download goes to ``images/.partial/``, is
  counted and hashed while it streams (stopped as soon as it exceeds the
  registered size), checked against the registered size and checksums, and
  a qcow2 disk is checked to have no backing or external data file; only
  then is its directory renamed into ``images/<id>/`` and the row marked
  ``ready``. A bad download marks the image ``failed`` with the reason, and
  every VM waiting for it fails with that reason;
* **one download**: concurrent first uses in this process share one task
  (single flight); the row's ``pending -> downloading`` compare-and-set
  claims the download across processes sharing the database (the others
  wait for the row to leave ``downloading``);
* **room first**: the bytes are reserved in the cache before the download
  starts (``site_agent.images.eviction``), evicting unused images if needed;
  no room leaves the image ``pending`` (``CacheFull``);
* a download interrupted (agent stopping) or failing locally (disk full)
  leaves the image ``pending``: the source is not to blame, the next use
  fetches it again.

Downloads use one ``httpx`` client (:func:`make_http_client`): redirects
only to http(s), proxies from the environment only when configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from core.db import utcnow
from core.resources.images import BootFileSource, ImageSource, ImageState
from site_agent.config import ImageCacheConfig
from site_agent.images.catalog import BootImage, disk_name
from site_agent.images.errors import (
    BadImageFormat,
    CacheFull,
    FetchFailed,
    ImageNotFound,
    ImageNotUsable,
)
from site_agent.images.eviction import CacheSpace
from site_agent.images.models import Image
from site_agent.images.repository import ImageRepository
from site_agent.images.sources import Digests, Expected, fetch_verified
from site_agent.layout import StateLayout
from site_agent.storage import qemu_img
from site_agent.storage.qemu_img import QemuImgError

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.5


async def _only_http(request: httpx.Request) -> None:
    """Every request, redirects included, must be http(s): a redirect never reaches file://."""
    if request.url.scheme not in ("http", "https"):
        raise httpx.UnsupportedProtocol(
            f"unsupported protocol {request.url.scheme!r} (redirect refused)", request=request
        )


def make_http_client(
    policy: ImageCacheConfig, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The HTTP client downloads use; ``transport`` is injected by tests.

    Redirects are followed (at most 5) only to http(s) URLs; proxies from
    the environment only with ``use_env_proxy``.
    """
    timeout = httpx.Timeout(policy.read_timeout_seconds, connect=policy.connect_timeout_seconds)
    return httpx.AsyncClient(
        transport=transport,
        timeout=timeout,
        follow_redirects=True,
        max_redirects=5,
        trust_env=policy.use_env_proxy,
        headers={"User-Agent": "stratus-site-agent/0.1 (image cache)"},
        event_hooks={"request": [_only_http]},
    )


class ImageFetcher:
    """First-use downloads of registered images (see the module docstring)."""

    def __init__(
        self,
        repo: ImageRepository,
        layout: StateLayout,
        space: CacheSpace,
        http: httpx.AsyncClient,
    ) -> None:
        self.repo = repo
        self.layout = layout
        self.space = space
        self.http = http
        self._fetches: dict[str, asyncio.Task[None]] = {}

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def close(self) -> None:
        """Stop downloads in progress (their images go back to ``pending``)."""
        tasks = list(self._fetches.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def boot_of(self, row: Image) -> BootImage:
        """Where the cached files of ``row`` are."""
        directory = self.layout.image_dir(row.id)
        return BootImage(
            name=row.name,
            disk=directory / disk_name(row.format),
            format=row.format,
            kernel=directory / "kernel" if row.kernel is not None else None,
            initrd=directory / "initrd" if row.initrd is not None else None,
            cmdline=row.cmdline,
        )

    async def ensure_cached(self, name: str) -> BootImage:
        """The verified boot files of the registered image ``name``, downloading them if needed.

        Call it only once the VM (or volume) row that uses the image is
        stored, so that eviction sees the image as in use afterwards.
        Concurrent calls for one image make one download. Raises
        ``ImageNotFound``, ``ImageNotUsable`` (failed earlier, being saved),
        ``VerificationFailed`` / ``FetchFailed`` (this download was bad: the
        image is now ``failed``), ``CacheFull`` (no room; the image stays
        ``pending``).
        """
        with self.space.pinned(name):
            for _attempt in range(5):
                async with self.space.lock:
                    row: Image | None = await self._db(self.repo.by_name, name)
                    if row is None:
                        raise ImageNotFound(name)
                    if row.state == ImageState.READY:
                        boot = self.boot_of(row)
                        if not await asyncio.to_thread(boot.missing):
                            await self._db(self.repo.touch, row.id)
                            return boot
                        await self._files_vanished(row)
                        continue
                    if row.state == ImageState.FAILED:
                        raise ImageNotUsable(f"image {name!r} failed: {row.state_reason}")
                    if row.state == ImageState.SAVING:
                        raise ImageNotUsable(f"image {name!r} is still being saved")
                    task = self._fetches.get(row.id)
                    if task is None:
                        task = self._start(row.id)
                # Shielded: a waiter that is cancelled (its VM killed) does not
                # stop the download the other waiters share.
                await asyncio.shield(task)
            raise ImageNotUsable(f"image {name!r} could not be made ready; try again")

    async def _files_vanished(self, row: Image) -> None:
        """A ``ready`` image whose files are gone: fetched again (URL) or ``failed`` (saved)."""
        if row.source == ImageSource.URL:
            await self._db(
                self.repo.change_state,
                row.id,
                ImageState.PENDING,
                "cached files were missing; fetched again",
                expect=ImageState.READY,
                cached_bytes=None,
                cached_at=None,
            )
            return
        await self._db(
            self.repo.change_state,
            row.id,
            ImageState.FAILED,
            "its files are missing from the cache",
            expect=ImageState.READY,
        )
        raise ImageNotUsable(f"image {row.name!r}: its files are missing from the cache")

    def _start(self, image_id: str) -> asyncio.Task[None]:
        task = asyncio.create_task(self._fetch(image_id))
        self._fetches[image_id] = task

        def done(t: asyncio.Task[None]) -> None:
            if self._fetches.get(image_id) is t:
                del self._fetches[image_id]
            if not t.cancelled():
                t.exception()  # retrieved here: waiters may all have gone

        task.add_done_callback(done)
        return task

    async def _fetch(self, image_id: str) -> None:
        claimed = await self._db(
            self.repo.change_state,
            image_id,
            ImageState.DOWNLOADING,
            "downloading and verifying",
            expect=ImageState.PENDING,
        )
        if not claimed:
            await self._wait_for_other(image_id)
            return
        row: Image | None = await self._db(self.repo.get, image_id)
        if row is None:
            return
        files = self._download_plan(row)
        try:
            await self.space.make_room(sum(e.size for _, _, e in files), image_id)
        except CacheFull as exc:
            await self._set(image_id, ImageState.PENDING, f"not downloaded: {exc}")
            raise
        work = self.layout.images_partial_dir / f"{image_id}-{uuid.uuid4().hex[:8]}"
        try:
            await self._download(row, files, work)
        except FetchFailed as exc:  # includes every verification failure
            await self._set(image_id, ImageState.FAILED, str(exc))
            log.warning("image %r failed: %s", row.name, exc)
            raise
        except QemuImgError as exc:
            reason = f"image {row.name!r} is not a valid {row.format} image: {exc}"
            await self._set(image_id, ImageState.FAILED, reason)
            raise BadImageFormat(reason) from exc
        except asyncio.CancelledError:
            await self._set(image_id, ImageState.PENDING, "download interrupted; fetched again")
            raise
        except OSError as exc:  # a local problem (disk full...): the source is not to blame
            reason = f"could not store image {row.name!r}: {exc}"
            await self._set(image_id, ImageState.PENDING, reason)
            raise FetchFailed(reason) from exc
        finally:
            self.space.release(image_id)
            await asyncio.to_thread(shutil.rmtree, work, True)

    async def _download(
        self, row: Image, files: list[tuple[str, str, Expected]], work: Path
    ) -> None:
        """Fetch and verify ``files`` into ``work``, move them into place, mark the row ready."""
        work.mkdir(mode=0o755)
        work.chmod(0o755)
        digests: dict[str, Digests] = {}
        for role, url, expected in files:
            dest = work / (disk_name(row.format) if role == "disk" else role)
            what = f"image {row.name!r}" + ("" if role == "disk" else f" {role}")
            digests[role] = await fetch_verified(url, dest, expected, self.http, what=what)
        await self._check_disk(work / disk_name(row.format), row)
        final = self.layout.image_dir(row.id)
        await asyncio.to_thread(shutil.rmtree, final, True)
        os.rename(work, final)
        disk = digests["disk"]
        fields: dict[str, Any] = {
            "sha1": disk.sha1,
            "sha256": disk.sha256,
            "cached_bytes": sum(d.size for d in digests.values()),
            "cached_at": utcnow(),
            "last_used_at": utcnow(),
        }
        for role in ("kernel", "initrd"):
            if role in digests:
                data = getattr(row, role) or {}
                fields[role] = {**data, "sha1": digests[role].sha1, "sha256": digests[role].sha256}
        stored = await self._db(
            self.repo.change_state,
            row.id,
            ImageState.READY,
            f"downloaded and verified ({fields['cached_bytes']} bytes)",
            expect=ImageState.DOWNLOADING,
            **fields,
        )
        if not stored:  # deleted meanwhile
            await asyncio.to_thread(shutil.rmtree, final, True)
        else:
            log.info("image %r cached (%d bytes)", row.name, fields["cached_bytes"])

    async def _set(self, image_id: str, state: ImageState, reason: str) -> None:
        await self._db(
            self.repo.change_state, image_id, state, reason, expect=ImageState.DOWNLOADING
        )

    @staticmethod
    def _download_plan(row: Image) -> list[tuple[str, str, Expected]]:
        """``(role, url, expected)`` of the disk and of the kernel and initrd, if any."""
        assert row.url is not None and row.size is not None
        plan = [("disk", row.url, Expected(row.size, row.sha1, row.sha256))]
        for role in ("kernel", "initrd"):
            data = getattr(row, role)
            if data is not None:
                source = BootFileSource.model_validate(data)
                plan.append((role, source.url, Expected(source.size, source.sha1, source.sha256)))
        return plan

    @staticmethod
    async def _check_disk(path: Path, row: Image) -> None:
        """A qcow2 must be qcow2 and standalone: a backing or data file could read host files."""
        if row.format != "qcow2":
            return  # raw is always opened as raw: any content is just guest data
        info = await qemu_img.info(path, fmt="qcow2")
        specific = (info.get("format-specific") or {}).get("data") or {}
        if info.get("backing-filename") or info.get("full-backing-filename"):
            raise BadImageFormat(f"image {row.name!r} is a qcow2 overlay (has a backing file)")
        if specific.get("data-file"):
            raise BadImageFormat(f"image {row.name!r} has an external qcow2 data file")

    async def _wait_for_other(self, image_id: str) -> None:
        """Another process (or an earlier task) holds the download: wait until it ends."""
        while True:
            row: Image | None = await self._db(self.repo.get, image_id)
            if row is None or row.state != ImageState.DOWNLOADING:
                return
            await asyncio.sleep(_POLL_SECONDS)
