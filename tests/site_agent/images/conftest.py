"""Fixtures for image cache tests: a loopback HTTP image server that counts requests."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.site_agent.conftest import auth

CHUNK = 64 * 1024


@dataclass
class ImageServer:
    """Serves ``files`` at ``/files/<name>`` on 127.0.0.1 (an ephemeral port).

    ``hits`` counts GET requests per name. ``delay`` holds every answer that
    long (so concurrent first uses overlap). ``endless[name] = n`` streams
    ``n`` zero bytes without a Content-Length; ``sent[name]`` is how many
    were written before the client hung up.
    """

    base: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    hits: collections.Counter[str] = field(default_factory=collections.Counter)
    delay: float = 0.0
    endless: dict[str, int] = field(default_factory=dict)
    sent: collections.Counter[str] = field(default_factory=collections.Counter)

    def url(self, name: str) -> str:
        return f"{self.base}/files/{name}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits[name] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if name in self.endless:
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            try:
                while self.sent[name] < self.endless[name]:
                    await resp.write(b"\0" * CHUNK)
                    self.sent[name] += CHUNK
                await resp.write_eof()
            except ConnectionError:
                pass  # the client stopped reading: what the test wants to see
            return resp
        data = self.files.get(name)
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type="application/octet-stream")


@pytest.fixture
async def image_server(aiohttp_server: Any) -> ImageServer:
    server = ImageServer()
    app = web.Application()
    app.router.add_get("/files/{name}", server.handle)
    running = await aiohttp_server(app, host="127.0.0.1")
    server.base = f"http://127.0.0.1:{running.port}"
    return server


def qcow2_bytes(path: Path, size: str = "16M") -> bytes:
    """A valid empty qcow2 image (written at ``path``), as bytes."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path.read_bytes()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha1(data: bytes) -> str:
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def spec(name: str, url: str, data: bytes, **extra: Any) -> dict[str, Any]:
    """A register body for ``data`` served at ``url`` (size and SHA-256 of ``data``)."""
    return {"name": name, "url": url, "size": len(data), "sha256": sha256(data), **extra}


async def register(site: Any, body: dict[str, Any], user: str = "alice") -> dict[str, Any]:
    resp = await site.client.post("/api/v1/images", json=body, headers=auth(user))
    assert resp.status == 201, await resp.text()
    image: dict[str, Any] = await resp.json()
    return image


async def get_image(site: Any, name: str, user: str = "alice") -> dict[str, Any]:
    resp = await site.client.get(f"/api/v1/images/{name}", headers=auth(user))
    assert resp.status == 200, await resp.text()
    image: dict[str, Any] = await resp.json()
    return image


async def list_images(site: Any, user: str = "alice") -> list[dict[str, Any]]:
    resp = await site.client.get("/api/v1/images", headers=auth(user))
    assert resp.status == 200
    images: list[dict[str, Any]] = (await resp.json())["images"]
    return images


async def events(site: Any, vm_id: str, user: str = "alice") -> list[str]:
    resp = await site.client.get(f"/api/v1/vms/{vm_id}/events", headers=auth(user))
    assert resp.status == 200
    return [e["reason"] for e in (await resp.json())["events"]]
