"""The image cache through the site API, on fake hypervisor hosts (SQLite and PostgreSQL).

Images are served by a loopback aiohttp server that counts requests; the
cached files and VM overlays are real qcow2/raw files made by qemu-img.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.site_agent.conftest import auth
from tests.site_agent.images.conftest import (
    ImageServer,
    get_image,
    list_images,
    qcow2_bytes,
    register,
    sha1,
    sha256,
    spec,
)


def qemu_info(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(path)], check=True, capture_output=True
    ).stdout
    info: dict[str, Any] = json.loads(out)
    return info


def qcow2_overlay_bytes(path: Path, backing: Path) -> bytes:
    """A qcow2 whose backing file is ``backing`` (a host file it must never expose)."""
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(backing), str(path)],
        check=True,
    )
    return path.read_bytes()


def cache_entries(state_dir: Path) -> list[str]:
    """Files under state_dir/images (the partial directory must be empty)."""
    root = state_dir / "images"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def test_first_use_downloads_verifies_caches_then_reuses(
    make_site: Any, image_server: ImageServer, tmp_path: Path
) -> None:
    site = await make_site()
    data = qcow2_bytes(tmp_path / "base.qcow2")
    image_server.files["base"] = data
    image = await register(site, spec("deb", image_server.url("base"), data, description="d"))
    assert image["state"] == "pending" and image["owner"] == "alice"
    assert image["url"] == image_server.url("base") and image["available"] is True
    assert image_server.hits["base"] == 0  # registering fetches nothing

    vm = await site.create(image="deb")
    ready = await site.wait(vm["id"])
    assert ready["state"] == "running" and ready["ready"], ready
    cached = await get_image(site, "deb")
    assert cached["state"] == "ready"
    assert cached["sha256"] == sha256(data)
    assert cached["sha1"] == sha1(data)  # computed while downloading, though not given
    assert cached["cached_bytes"] == len(data) and cached["last_used_at"] is not None

    state_dir = site.config.site.state_dir
    entries = cache_entries(state_dir)
    assert len(entries) == 1 and entries[0].endswith("/disk.qcow2"), entries
    base = state_dir / "images" / entries[0]
    assert base.read_bytes() == data
    root = state_dir / "vms" / vm["id"] / "root.qcow2"
    info = qemu_info(root)
    assert info["backing-filename"] == str(base)  # the VM boots from an overlay on the cache

    second = await site.create(image="deb")
    assert (await site.wait(second["id"]))["ready"]
    assert image_server.hits["base"] == 1


async def test_concurrent_first_launches_download_once(
    make_site: Any, image_server: ImageServer, tmp_path: Path
) -> None:
    site = await make_site()
    data = qcow2_bytes(tmp_path / "base.qcow2")
    image_server.files["base"] = data
    image_server.delay = 0.5  # both VMs reach prolog while the download is in flight
    await register(site, spec("deb", image_server.url("base"), data))
    vms = await asyncio.gather(*(site.create(image="deb", name=f"c-{i}") for i in range(3)))
    states = await asyncio.gather(*(site.wait(vm["id"]) for vm in vms))
    assert all(s["state"] == "running" and s["ready"] for s in states), states
    assert image_server.hits["base"] == 1


async def _failed_download(
    site: Any, image_server: ImageServer, body: dict[str, Any], needle: str
) -> None:
    """Register ``body``; the first VM fails naming ``needle``; the image is failed; no files."""
    await register(site, body)
    vm = await site.create(image=body["name"])
    final = await site.wait(vm["id"])
    assert final["state"] == "failed", final
    assert needle in final["state_reason"], final["state_reason"]
    image = await get_image(site, body["name"])
    assert image["state"] == "failed" and needle in image["state_reason"], image
    assert image["available"] is False
    state_dir = site.config.site.state_dir
    assert cache_entries(state_dir) == []
    assert not (state_dir / "vms" / vm["id"]).exists()
    # A failed image is not retried behind the user's back: creates are refused.
    resp = await site.client.post(
        "/api/v1/vms", json={"image": body["name"]}, headers=auth("alice")
    )
    assert resp.status == 409
    error = (await resp.json())["error"]
    assert error["code"] == "image_unavailable" and needle in error["message"]


async def test_tampered_image_is_refused(
    make_site: Any, image_server: ImageServer, tmp_path: Path
) -> None:
    site = await make_site()
    data = qcow2_bytes(tmp_path / "base.qcow2")
    image_server.files["base"] = data[:-1] + bytes([data[-1] ^ 0xFF])  # same size, one bit flipped
    await _failed_download(
        site, image_server, spec("evil", image_server.url("base"), data), "sha256 mismatch"
    )


async def test_sha1_is_checked_too(
    make_site: Any, image_server: ImageServer, tmp_path: Path
) -> None:
    site = await make_site()
    data = qcow2_bytes(tmp_path / "base.qcow2")
    image_server.files["base"] = data
    body = {"name": "s1", "url": image_server.url("base"), "size": len(data), "sha1": "0" * 40}
    await _failed_download(site, image_server, body, "sha1 mismatch")


async def test_short_download_is_refused(
    make_site: Any, image_server: ImageServer, tmp_path: Path
) -> None:
    site = await make_site()
    data = qcow2_bytes(tmp_path / "base.qcow2")
    image_server.files["base"] = data[: len(data) // 2]
    await _failed_download(
        site, image_server, spec("short", image_server.url("base"), data), "short download"
    )


async def test_announced_oversize_is_not_downloaded(
    make_site: Any, image_server: ImageServer, tmp_path: Path
) -> None:
    site = await make_site()
    data = qcow2_bytes(tmp_path / "base.qcow2")
    image_server.files["base"] = data + b"\0" * 4096
    await _failed_download(
        site, image_server, spec("big", image_server.url("base"), data), "announces"
    )


async def test_streamed_oversize_is_cut_off_early(
    make_site: Any, image_server: ImageServer
) -> None:
    site = await make_site()
    image_server.endless["flood"] = 512 * 1024 * 1024  # 512 MiB, no Content-Length
    expected = b"\0" * (1024 * 1024)
    body = spec("flood", image_server.url("flood"), expected, format="raw")
    await _failed_download(site, image_server, body, "more than the expected 1048576 bytes")
    assert image_server.sent["flood"] < 128 * 1024 * 1024, image_server.sent


async def test_http_error_fails_the_image(make_site: Any, image_server: ImageServer) -> None:
    site = await make_site()
    body = spec("gone", image_server.url("missing"), b"x" * 100, format="raw")
    await _failed_download(site, image_server, body, "HTTP 404")


async def test_qcow2_with_a_backing_file_is_refused(
    make_site: Any, image_server: ImageServer, tmp_path: Path
) -> None:
    site = await make_site()
    data = qcow2_overlay_bytes(tmp_path / "overlay.qcow2", backing=Path("/etc/hostname"))
    image_server.files["overlay"] = data
    await _failed_download(
        site, image_server, spec("ovl", image_server.url("overlay"), data), "backing file"
    )


async def test_declared_qcow2_that_is_not_qcow2_is_refused(
    make_site: Any, image_server: ImageServer
) -> None:
    site = await make_site()
    data = os.urandom(65536)
    image_server.files["junk"] = data
    await _failed_download(
        site, image_server, spec("junk", image_server.url("junk"), data), "not a valid qcow2"
    )


async def test_lru_eviction_skips_images_in_use(make_site: Any, image_server: ImageServer) -> None:
    site = await make_site(image_cache={"max_bytes": 700_000})
    blobs = {name: os.urandom(300_000) for name in ("a", "b", "c")}
    for name, data in blobs.items():
        image_server.files[name] = data
        await register(site, spec(name, image_server.url(name), data, format="raw"))

    vm_a = await site.create(image="a")  # a: cached, and in use from now on
    assert (await site.wait(vm_a["id"]))["ready"]
    vm_b = await site.create(image="b")
    assert (await site.wait(vm_b["id"]))["ready"]
    await site.client.delete(f"/api/v1/vms/{vm_b['id']}", headers=auth("alice"))  # b: unused

    # c needs room: a is the least recently used but in use, so b goes.
    vm_c = await site.create(image="c")
    assert (await site.wait(vm_c["id"]))["ready"]
    states = {i["name"]: i for i in await list_images(site)}
    assert states["a"]["state"] == "ready"
    assert states["c"]["state"] == "ready"
    assert states["b"]["state"] == "pending" and "evicted" in states["b"]["state_reason"]
    assert states["b"]["cached_bytes"] is None

    # Everything cached is in use: b cannot come back; the VM fails, b stays pending.
    vm_b2 = await site.create(image="b")
    final = await site.wait(vm_b2["id"])
    assert final["state"] == "failed" and "image cache full" in final["state_reason"]
    assert (await get_image(site, "b"))["state"] == "pending"
    assert (await get_image(site, "a"))["state"] == "ready"

    # Once c is free, b evicts it and is downloaded again.
    await site.client.delete(f"/api/v1/vms/{vm_c['id']}", headers=auth("alice"))
    vm_b3 = await site.create(image="b")
    assert (await site.wait(vm_b3["id"]))["ready"]
    states = {i["name"]: i["state"] for i in await list_images(site)}
    assert states == {"a": "ready", "b": "ready", "c": "pending", "tiny": "ready"}
    assert image_server.hits == {"a": 1, "b": 2, "c": 1}


async def test_delete_is_refused_while_in_use(
    make_site: Any, image_server: ImageServer, tmp_path: Path
) -> None:
    site = await make_site()
    data = qcow2_bytes(tmp_path / "base.qcow2")
    image_server.files["base"] = data
    await register(site, spec("deb", image_server.url("base"), data))
    vm = await site.create(image="deb")
    await site.wait(vm["id"])
    resp = await site.client.delete("/api/v1/images/deb", headers=auth("alice"))
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "image_in_use"
    assert (await get_image(site, "deb"))["state"] == "ready"

    await site.client.delete(f"/api/v1/vms/{vm['id']}", headers=auth("alice"))
    resp = await site.client.delete("/api/v1/images/deb", headers=auth("alice"))
    assert resp.status == 200
    assert await resp.json() == {"name": "deb", "freed_bytes": len(data)}
    assert cache_entries(site.config.site.state_dir) == []
    resp = await site.client.get("/api/v1/images/deb", headers=auth("alice"))
    assert resp.status == 404


async def test_images_are_private_to_their_owner_unless_public(
    make_site: Any, image_server: ImageServer, tmp_path: Path
) -> None:
    site = await make_site()
    data = qcow2_bytes(tmp_path / "base.qcow2")
    image_server.files["base"] = data
    await register(site, spec("mine", image_server.url("base"), data))
    await register(site, spec("shared", image_server.url("base"), data, public=True), user="root")

    assert {i["name"] for i in await list_images(site, "bob")} == {"tiny", "shared"}
    assert {i["name"] for i in await list_images(site, "root")} == {"tiny", "shared", "mine"}
    resp = await site.client.get("/api/v1/images/mine", headers=auth("bob"))
    assert resp.status == 404
    resp = await site.client.post("/api/v1/vms", json={"image": "mine"}, headers=auth("bob"))
    assert resp.status == 422  # not visible = unknown
    resp = await site.client.delete("/api/v1/images/mine", headers=auth("bob"))
    assert resp.status == 404
    shared = await get_image(site, "shared", "bob")
    assert shared["url"] is None  # only the owner and admins see the source URL
    resp = await site.client.delete("/api/v1/images/shared", headers=auth("bob"))
    assert resp.status == 403
    vm = await site.create(user="bob", image="shared")
    assert (await site.wait(vm["id"], user="bob"))["ready"]


async def test_config_images_are_listed_and_cannot_be_deleted(make_site: Any) -> None:
    site = await make_site()
    [tiny] = await list_images(site)
    assert tiny["name"] == "tiny" and tiny["source"] == "config" and tiny["state"] == "ready"
    assert tiny["url"] is None  # local paths are for admins
    admin_view = await get_image(site, "tiny", "root")
    assert admin_view["url"].startswith("file:///")
    resp = await site.client.delete("/api/v1/images/tiny", headers=auth("root"))
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "image_configured"
