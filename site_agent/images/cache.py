"""The site's image cache: registration, first-use download with verification, LRU eviction.

Guarantees:

* **verified before use**: a download goes to ``images/.partial/``, is
  counted and hashed while it streams (stopped as soon as it exceeds the
  registered size), checked against the registered size and checksums, and
  a qcow2 disk is checked to have no backing or external data file; only
  then is its directory renamed into ``images/<id>/`` and the row marked
  ``ready``. A bad download marks the image ``failed`` with the reason,
  and every VM waiting for it fails with that reason;
* **one download**: concurrent first uses in this process share one task
  (single flight); the row's ``pending -> downloading`` compare-and-set
  claims the download across processes sharing the database;
* **eviction never breaks a user**: when a download needs room under
  ``[image_cache] max_bytes``, the least recently used ``ready`` images
  that came from a URL are evicted, never one in use (asked from the
  database through the registered usage sources: non-terminal VMs,
  volumes) nor one being fetched. Saved images have no URL to fetch again
  from: they are never evicted and never expire; they go only when their
  owner deletes them;
* **save as image**: a VM's root overlay is flattened (``qemu-img
  convert``) into a standalone qcow2 in the cache and registered as a
  ``ready`` image of the VM's owner, with its size and checksums.

Images of the site configuration file are served by :class:`ConfigImages`
(used in place, visible to all). Registered and saved images are rows of
the ``images`` table; names are unique across both.

Cached files are kept in a plain directory (``state_dir/images``, 0755
so QEMU can read the bases), not in a libvirt storage pool: the agent
itself downloads, verifies and flattens images, overlays are made with
``qemu-img``, and a site's hosts may be remote, so a per-host libvirt pool
would add a second inventory without doing any of the work.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import Engine

from auth.principal import Principal
from core.db import utcnow
from site_agent.config import ImageCacheConfig, ImageConfig
from site_agent.images.catalog import BootImage, ConfigImages, ImageRef
from site_agent.images.errors import (
    BadImageFormat,
    CacheFull,
    FetchFailed,
    ImageBusy,
    ImageConfigured,
    ImageError,
    ImageForbidden,
    ImageInUse,
    ImageNameTaken,
    ImageNotFound,
    ImageNotUsable,
    ImageTooLarge,
    SaveFailed,
    SourceRefused,
)
from site_agent.images.models import (
    BootFileInfo,
    BootFileSource,
    Image,
    ImageDeleted,
    ImagePublic,
    ImageRegister,
    ImageSource,
    ImageState,
    SaveAs,
)
from site_agent.images.repository import ImageRepository
from site_agent.images.sources import (
    Digests,
    Expected,
    check_url,
    digest_file,
    fetch_verified,
    local_path,
    redact,
)
from site_agent.layout import StateLayout
from site_agent.storage import qemu_img
from site_agent.storage.qemu_img import QemuImgError

log = logging.getLogger(__name__)

UsageSource = Callable[[], Iterable[str]]
"""A blocking callable naming the images in use (run in a thread)."""

_IMAGE_DIR = re.compile(r"^[0-9a-f]{32}$")
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


def _disk_name(fmt: str) -> str:
    return f"disk.{fmt}"


def _link_or_copy(source: Path, dest: Path) -> None:
    """Hard-link ``source`` to ``dest`` (cached files are never modified), else copy it."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)
        dest.chmod(0o644)


def _names_of(source: UsageSource) -> set[str]:
    return set(source())


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
        self.policy = policy
        self.http = http
        self._usage_sources: list[UsageSource] = []
        self._lock = asyncio.Lock()  # guards use/evict/delete decisions
        self._fetches: dict[str, asyncio.Task[None]] = {}
        self._reserved: dict[str, int] = {}  # bytes promised to downloads in flight
        self._pins: collections.Counter[str] = collections.Counter()

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    # ----- usage ---------------------------------------------------------

    def add_usage_source(self, source: UsageSource) -> None:
        """Register a blocking callable that names images in use (e.g. by non-terminal VMs).

        Every source is asked before an eviction or a delete; an image any of
        them names is neither evicted nor deleted.
        """
        self._usage_sources.append(source)

    async def in_use(self) -> set[str]:
        """Names of images in use now, by any usage source or by an ``ensure_cached`` call."""
        names = {name for name, count in self._pins.items() if count > 0}
        for source in self._usage_sources:
            names.update(await asyncio.to_thread(_names_of, source))
        return names

    # ----- start-up and shutdown -------------------------------------------

    async def start(self) -> None:
        """Prepare the cache after an agent start.

        Leftovers of interrupted downloads and saves are removed,
        ``downloading`` rows go back to ``pending`` (fetched again on next
        use), directories of images that no longer exist are deleted. ``saving`` rows
        are finished or failed by the VM manager's reconciliation. Nothing is
        evicted here: that happens before a download, when every usage
        source (VMs, volumes) is registered.
        """
        await asyncio.to_thread(self._clean_files)
        for row in await self._db(self.repo.downloading):
            await self._db(
                self.repo.change_state,
                row.id,
                ImageState.PENDING,
                "download interrupted by an agent restart; fetched again on next use",
                expect=ImageState.DOWNLOADING,
            )
        clashes = [r.name for r in await self._db(self.repo.list_all) if r.name in self.config]
        for name in clashes:
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
        tasks = list(self._fetches.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ----- API: register, list, show, delete --------------------------------

    def _visible(self, principal: Principal, row: Image) -> bool:
        return row.public or principal.can_access(row.owner)

    def _public(self, principal: Principal, row: Image) -> ImagePublic:
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

    def _check_source(self, url: str, *, admin: bool) -> str:
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
        return self._public(principal, row)

    async def list_for(self, principal: Principal) -> list[ImagePublic]:
        """Images the caller may boot: public ones, their own, every one for site admins."""
        views = [self.config.public(n, admin=principal.is_admin) for n in self.config.names()]
        rows: list[Image] = await self._db(self.repo.list_all)
        views += [
            self._public(principal, r)
            for r in rows
            if r.name not in self.config and self._visible(principal, r)
        ]
        return sorted(views, key=lambda v: v.name)

    async def _row_for(self, principal: Principal, name: str) -> Image:
        row: Image | None = await self._db(self.repo.by_name, name)
        if row is None or not self._visible(principal, row):
            raise ImageNotFound(name)
        return row

    async def get_for(self, principal: Principal, name: str) -> ImagePublic:
        """One image the caller may see; ``ImageNotFound`` otherwise."""
        if name in self.config:
            return self.config.public(name, admin=principal.is_admin)
        return self._public(principal, await self._row_for(principal, name))

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
        async with self._lock:
            row = await self._row_for(principal, name)
            if not principal.can_access(row.owner):
                raise ImageForbidden(f"image {name!r} belongs to {row.owner}")
            if row.state in (ImageState.DOWNLOADING, ImageState.SAVING):
                raise ImageBusy(f"image {name!r} is {row.state}; try again when it has finished")
            if name in await self.in_use():
                raise ImageInUse(f"image {name!r} is in use by a VM or a volume")
            await self._db(self.repo.delete, row.id)
            await asyncio.to_thread(shutil.rmtree, self.layout.image_dir(row.id), True)
        log.info("image %r deleted by %s", name, principal.account)
        return ImageDeleted(name=name, freed_bytes=row.cached_bytes or 0)

    # ----- use -------------------------------------------------------------

    async def lookup(self, principal: Principal, name: str) -> ImageRef:
        """Check, without fetching anything, that ``principal`` can boot ``name`` now.

        ``ImageNotFound`` if there is no such image or the caller may not see
        it; ``ImageNotUsable`` if it ``failed``, is still being saved, or (a
        config image) misses files.
        """
        if name in self.config:
            self.config.boot(name)
            return ImageRef(name)
        row = await self._row_for(principal, name)
        if row.state == ImageState.FAILED:
            raise ImageNotUsable(
                f"image {name!r} failed: {row.state_reason}; delete and register it again"
            )
        if row.state == ImageState.SAVING:
            raise ImageNotUsable(f"image {name!r} is still being saved from VM {row.origin_vm}")
        return ImageRef(name)

    def _boot_of(self, row: Image) -> BootImage:
        directory = self.layout.image_dir(row.id)
        return BootImage(
            name=row.name,
            disk=directory / _disk_name(row.format),
            format=row.format,
            kernel=directory / "kernel" if row.kernel is not None else None,
            initrd=directory / "initrd" if row.initrd is not None else None,
            cmdline=row.cmdline,
        )

    async def ensure_cached(self, name: str) -> BootImage:
        """The verified boot files of ``name``, downloading them first if needed.

        Call it only once the VM (or volume) row that uses the image is
        stored, so that eviction sees the image as in use afterwards.
        Concurrent calls for one image make one download. Raises
        ``ImageNotFound``, ``ImageNotUsable`` (failed earlier, being saved),
        ``VerificationFailed`` / ``FetchFailed`` (this download was bad: the
        image is now ``failed``), ``CacheFull`` (no room; the image stays
        ``pending``).
        """
        if name in self.config:
            return await asyncio.to_thread(self.config.boot, name)
        self._pins[name] += 1
        try:
            for _attempt in range(5):
                async with self._lock:
                    row: Image | None = await self._db(self.repo.by_name, name)
                    if row is None:
                        raise ImageNotFound(name)
                    if row.state == ImageState.READY:
                        boot = self._boot_of(row)
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
                        task = self._start_fetch(row.id)
                # Shielded: a waiter that is cancelled (its VM killed) does not
                # stop the download the other waiters share.
                await asyncio.shield(task)
            raise ImageNotUsable(f"image {name!r} could not be made ready; try again")
        finally:
            self._pins[name] -= 1
            if self._pins[name] <= 0:
                del self._pins[name]

    async def _files_vanished(self, row: Image) -> None:
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

    def _start_fetch(self, image_id: str) -> asyncio.Task[None]:
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
        assert row.url is not None and row.size is not None
        files = self._download_plan(row)
        needed = sum(expected.size for _, _, expected in files)
        try:
            await self._make_room(needed, image_id)
        except CacheFull as exc:
            await self._set(image_id, ImageState.PENDING, f"not downloaded: {exc}")
            raise
        work = self.layout.images_partial_dir / f"{image_id}-{uuid.uuid4().hex[:8]}"
        try:
            work.mkdir(mode=0o755)
            work.chmod(0o755)
            digests: dict[str, Digests] = {}
            for role, url, expected in files:
                dest = work / (_disk_name(row.format) if role == "disk" else role)
                what = f"image {row.name!r}" + ("" if role == "disk" else f" {role}")
                digests[role] = await fetch_verified(url, dest, expected, self.http, what=what)
            await self._check_disk(work / _disk_name(row.format), row)
            final = self.layout.image_dir(image_id)
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
                    fields[role] = {
                        **data,
                        "sha1": digests[role].sha1,
                        "sha256": digests[role].sha256,
                    }
            stored = await self._db(
                self.repo.change_state,
                image_id,
                ImageState.READY,
                f"downloaded and verified ({fields['cached_bytes']} bytes)",
                expect=ImageState.DOWNLOADING,
                **fields,
            )
            if not stored:  # deleted meanwhile
                await asyncio.to_thread(shutil.rmtree, final, True)
            else:
                log.info("image %r cached (%d bytes)", row.name, fields["cached_bytes"])
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
            self._reserved.pop(image_id, None)
            await asyncio.to_thread(shutil.rmtree, work, True)

    async def _set(self, image_id: str, state: ImageState, reason: str) -> None:
        await self._db(
            self.repo.change_state, image_id, state, reason, expect=ImageState.DOWNLOADING
        )

    def _download_plan(self, row: Image) -> list[tuple[str, str, Expected]]:
        assert row.url is not None and row.size is not None
        plan = [("disk", row.url, Expected(row.size, row.sha1, row.sha256))]
        for role in ("kernel", "initrd"):
            data = getattr(row, role)
            if data is not None:
                source = BootFileSource.model_validate(data)
                plan.append((role, source.url, Expected(source.size, source.sha1, source.sha256)))
        return plan

    async def _check_disk(self, path: Path, row: Image) -> None:
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

    async def _make_room(self, needed: int, reserve_for: str | None) -> None:
        """Evict unused images, least recently used first, until ``needed`` bytes fit.

        ``CacheFull`` if they cannot fit even then (what is left is in use).
        """
        limit = self.policy.max_bytes
        async with self._lock:
            rows: list[Image] = await self._db(self.repo.evictable)
            in_use = await self.in_use()
            total = sum(r.cached_bytes or 0 for r in rows) + sum(self._reserved.values())
            for row in rows:
                if total + needed <= limit:
                    break
                if row.name in in_use or row.id == reserve_for:
                    continue
                evicted = await self._db(
                    self.repo.change_state,
                    row.id,
                    ImageState.PENDING,
                    "evicted from the cache (least recently used); fetched again on next use",
                    expect=ImageState.READY,
                    cached_bytes=None,
                    cached_at=None,
                )
                if evicted:
                    await asyncio.to_thread(shutil.rmtree, self.layout.image_dir(row.id), True)
                    total -= row.cached_bytes or 0
                    log.info("image %r evicted (%d bytes)", row.name, row.cached_bytes or 0)
            if total + needed > limit:
                raise CacheFull(
                    f"image cache full: {needed} bytes needed, {max(limit - total, 0)} free"
                    f" of max_bytes={limit}, the rest held by images in use"
                )
            if reserve_for is not None:
                self._reserved[reserve_for] = needed

    # ----- save as image -----------------------------------------------------

    async def reserve_save(self, owner: str, save: SaveAs, vm_id: str, base_image: str) -> None:
        """Claim ``save.name`` for the root disk of ``vm_id``: a ``saving`` row of ``owner``.

        ``ImageNameTaken`` if the name is in use. The row is the VM's pending
        save until :meth:`complete_save` or :meth:`drop_save`.
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

    async def pending_save(self, vm_id: str) -> str | None:
        """The name of the image ``vm_id``'s root disk is to be saved as, if any."""
        row: Image | None = await self._db(self.repo.saving_for, vm_id)
        return row.name if row is not None else None

    async def pending_saves(self) -> dict[str, str]:
        """Every pending save: VM id -> image name."""
        rows: list[Image] = await self._db(self.repo.saving)
        return {r.origin_vm: r.name for r in rows if r.origin_vm is not None}

    async def drop_save(self, vm_id: str, reason: str) -> str | None:
        """Mark ``vm_id``'s pending save ``failed`` with ``reason``; its name, or None if none."""
        row: Image | None = await self._db(self.repo.saving_for, vm_id)
        if row is None:
            return None
        dropped = await self._db(
            self.repo.change_state, row.id, ImageState.FAILED, reason, expect=ImageState.SAVING
        )
        return row.name if dropped else None

    async def complete_save(self, vm_id: str, root: Path, note: str = "") -> Image:
        """Flatten ``root`` (the stopped VM's overlay) into the pending image of ``vm_id``.

        The image becomes ``ready``, owned by the VM's owner, with its size
        and checksums; a direct-kernel-boot base's kernel and initrd are
        kept with it (hard links), so it stays bootable whatever happens to
        the base. ``SaveFailed`` (the image is then ``failed``) on any error.
        """
        row: Image | None = await self._db(self.repo.saving_for, vm_id)
        if row is None:
            raise SaveFailed(f"VM {vm_id} has no pending save (it was dropped)")
        work = self.layout.images_partial_dir / f"{row.id}-{uuid.uuid4().hex[:8]}"
        try:
            base = await self.ensure_cached(row.base_image) if row.base_image else None
            await self._db(
                self.repo.change_state,
                row.id,
                ImageState.SAVING,
                f"converting the root disk of VM {vm_id}",
                expect=ImageState.SAVING,
            )
            work.mkdir(mode=0o755)
            work.chmod(0o755)
            disk = work / _disk_name("qcow2")
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
            final = self.layout.image_dir(row.id)
            await asyncio.to_thread(shutil.rmtree, final, True)
            os.rename(work, final)
            reason = f"saved from VM {vm_id} ({digests.size} bytes){note}"
            stored = await self._db(
                self.repo.change_state,
                row.id,
                ImageState.READY,
                reason,
                expect=ImageState.SAVING,
                cached_bytes=total,
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
