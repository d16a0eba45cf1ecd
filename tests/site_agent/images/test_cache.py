"""``ImageCache`` directly: one download across processes, interrupted downloads, usage pins.

Two ``ImageCache`` objects on one database and one state directory stand for
two agent processes; downloads are answered by an httpx ``MockTransport``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from auth.principal import Principal
from core.db import create_tables, make_engine
from core.resources.images import ImageRegister, ImageState
from site_agent.config import ImageCacheConfig
from site_agent.images.cache import ImageCache
from site_agent.images.fetcher import make_http_client
from site_agent.images.repository import ImageRepository
from site_agent.layout import StateLayout

ALICE = Principal(account="alice", identity="alice", method="token")
DATA = b"\x5a" * 300_000
BODY = ImageRegister(
    name="img",
    url="http://images.test/img.raw",
    format="raw",
    size=len(DATA),
    sha256=hashlib.sha256(DATA).hexdigest(),
)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[Engine]:
    engine = make_engine(database_url)
    await asyncio.to_thread(create_tables, engine)
    yield engine
    engine.dispose()


@pytest.fixture
async def caches(
    engine: Engine, tmp_path: Path
) -> AsyncIterator[Callable[[Callable[[httpx.Request], Any]], Any]]:
    """Makes caches sharing ``engine`` and one state directory (closed after the test)."""
    layout = StateLayout(tmp_path / "state")
    layout.prepare()
    made: list[tuple[ImageCache, httpx.AsyncClient]] = []

    async def make(handler: Callable[[httpx.Request], Any]) -> ImageCache:
        policy = ImageCacheConfig()
        http = make_http_client(policy, httpx.MockTransport(handler))
        cache = ImageCache(engine, layout, [], policy, http)
        await cache.start()
        made.append((cache, http))
        return cache

    yield make
    for cache, http in made:
        await cache.close()
        await http.aclose()


async def test_two_processes_download_once(caches: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second process finds the download claimed by the first and waits for it."""
    calls = 0
    started, gate = asyncio.Event(), asyncio.Event()

    async def held(_request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        started.set()
        await gate.wait()
        return httpx.Response(200, stream=httpx.ByteStream(DATA))

    first, second = await caches(held), await caches(held)
    await first.register(ALICE, BODY)
    first_use = asyncio.create_task(first.ensure_cached("img"))
    await started.wait()  # the first process claimed the download and is fetching
    waiting = asyncio.Event()
    wait_for_other = second.fetcher._wait_for_other

    async def observed(image_id: str) -> None:
        waiting.set()
        await wait_for_other(image_id)

    monkeypatch.setattr(second.fetcher, "_wait_for_other", observed)
    second_use = asyncio.create_task(second.ensure_cached("img"))
    await waiting.wait()  # the second saw the claim: it waits instead of downloading
    gate.set()
    boots = await asyncio.gather(first_use, second_use)
    assert calls == 1
    assert boots[0] == boots[1] and boots[0].disk.read_bytes() == DATA
    view = await second.get_for(ALICE, "img")
    assert view.state == ImageState.READY and view.cached_bytes == len(DATA)


async def test_closing_during_a_download_leaves_it_pending_and_no_files(
    caches: Any, engine: Engine
) -> None:
    started = asyncio.Event()

    async def stalls(_request: httpx.Request) -> httpx.Response:
        started.set()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    cache = await caches(stalls)
    await cache.register(ALICE, BODY)
    waiter = asyncio.create_task(cache.ensure_cached("img"))
    await started.wait()
    assert (await cache.get_for(ALICE, "img")).state == ImageState.DOWNLOADING
    await cache.close()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    view = await cache.get_for(ALICE, "img")
    assert view.state == ImageState.PENDING and "interrupted" in (view.state_reason or "")
    assert list(cache.layout.images_partial_dir.iterdir()) == []


async def test_start_resets_downloads_left_by_a_dead_process(caches: Any, engine: Engine) -> None:
    def serve(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=httpx.ByteStream(DATA))

    dead = await caches(serve)
    await dead.register(ALICE, BODY)
    repo = ImageRepository(engine)
    row = repo.by_name("img")
    assert row is not None
    repo.change_state(row.id, ImageState.DOWNLOADING, "a process that died")
    (dead.layout.images_partial_dir / f"{row.id}-dead").mkdir()

    fresh = await caches(serve)  # start() runs here
    assert (await fresh.get_for(ALICE, "img")).state == ImageState.PENDING
    assert list(fresh.layout.images_partial_dir.iterdir()) == []
    boot = await fresh.ensure_cached("img")
    assert boot.disk.read_bytes() == DATA


async def test_images_being_used_are_reported_in_use(caches: Any) -> None:
    gate = asyncio.Event()
    requested = asyncio.Event()

    async def gated(_request: httpx.Request) -> httpx.Response:
        requested.set()
        await gate.wait()
        return httpx.Response(200, stream=httpx.ByteStream(DATA))

    cache = await caches(gated)
    cache.add_usage_source(lambda: ["from-a-volume"])
    await cache.register(ALICE, BODY)
    task = asyncio.create_task(cache.ensure_cached("img"))
    await requested.wait()  # the download is under way (no fixed delay)
    assert await cache.in_use() == {"img", "from-a-volume"}  # pinned while being fetched
    gate.set()
    await task
    assert await cache.in_use() == {"from-a-volume"}
