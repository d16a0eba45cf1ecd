"""Room in the image cache: which images are in use, and LRU eviction of the others.

When a download needs room under ``[image_cache] max_bytes``, the least
recently used ``ready`` images that came from a URL are evicted (their files
deleted, their rows back to ``pending``: the next use fetches them again),
never one in use and never the one being fetched. Saved images have no URL
to fetch again from: they are never evicted.

"In use" is asked when it matters, never cached: every registered usage
source (a blocking callable run in a thread: non-terminal VMs, volumes that
copy an image or have it attached as a static disk) plus the images pinned
by an ``ensure_cached`` in progress in this process.

:attr:`CacheSpace.lock` guards every decision that depends on "in use" or on
the cached bytes (use, evict, delete); it is never held across a download.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from core.resources.images import ImageState
from site_agent.config import ImageCacheConfig
from site_agent.images.errors import CacheFull
from site_agent.images.models import Image
from site_agent.images.repository import ImageRepository
from site_agent.layout import StateLayout

log = logging.getLogger(__name__)

UsageSource = Callable[[], Iterable[str]]
"""A blocking callable naming the images in use (run in a thread)."""


def _names_of(source: UsageSource) -> set[str]:
    return set(source())


class CacheSpace:
    """Usage sources, pins, byte reservations and eviction (see the module docstring)."""

    def __init__(
        self, repo: ImageRepository, layout: StateLayout, policy: ImageCacheConfig
    ) -> None:
        self.repo = repo
        self.layout = layout
        self.policy = policy
        self.lock = asyncio.Lock()
        self._sources: list[UsageSource] = []
        self._reserved: dict[str, int] = {}  # bytes promised to downloads in flight
        self._pins: collections.Counter[str] = collections.Counter()

    def add_usage_source(self, source: UsageSource) -> None:
        """Register a blocking callable that names images in use (e.g. by non-terminal VMs).

        Every source is asked before an eviction or a delete; an image any of
        them names is neither evicted nor deleted.
        """
        self._sources.append(source)

    async def in_use(self) -> set[str]:
        """Names of images in use now, by any usage source or by a pin."""
        names = {name for name, count in self._pins.items() if count > 0}
        for source in self._sources:
            names.update(await asyncio.to_thread(_names_of, source))
        return names

    @contextmanager
    def pinned(self, name: str) -> Iterator[None]:
        """``name`` counts as in use while the block runs (an ``ensure_cached`` in progress)."""
        self._pins[name] += 1
        try:
            yield
        finally:
            self._pins[name] -= 1
            if self._pins[name] <= 0:
                del self._pins[name]

    def release(self, image_id: str) -> None:
        """Forget the bytes reserved for ``image_id``'s download (it ended, either way)."""
        self._reserved.pop(image_id, None)

    async def make_room(self, needed: int, reserve_for: str | None) -> None:
        """Evict unused images, least recently used first, until ``needed`` bytes fit.

        The bytes are then reserved for the download of ``reserve_for`` until
        :meth:`release`. ``CacheFull`` if they cannot fit even then (what is
        left is in use or reserved).
        """
        limit = self.policy.max_bytes
        async with self.lock:
            rows: list[Image] = await asyncio.to_thread(self.repo.evictable)
            in_use = await self.in_use()
            total = sum(r.cached_bytes or 0 for r in rows) + sum(self._reserved.values())
            for row in rows:
                if total + needed <= limit:
                    break
                if row.name in in_use or row.id == reserve_for:
                    continue
                evicted = await asyncio.to_thread(
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
