"""Bad input to /images and to save-as-image: each a 4xx JSON error, nothing changed."""

from __future__ import annotations

from typing import Any

import pytest

from tests.site_agent.conftest import auth
from tests.site_agent.images.conftest import list_images

URL = "http://127.0.0.1:9/never-fetched.qcow2"  # refused requests never reach it
GOOD: dict[str, Any] = {"name": "good", "url": URL, "size": 1000, "sha256": "ab" * 32}
KERNEL = {"url": "http://127.0.0.1:9/vmlinuz", "size": 10, "sha256": "cd" * 32}


@pytest.mark.parametrize(
    ("user", "changes", "status", "needle"),
    [
        ("alice", {"name": "../etc"}, 422, "name"),
        ("alice", {"name": "a/b"}, 422, "name"),
        ("alice", {"name": ".hidden"}, 422, "name"),
        ("alice", {"name": "x" * 65}, 422, "name"),
        ("alice", {"url": "file:///etc/shadow"}, 403, "site admins"),
        ("alice", {"url": "FILE:///etc/shadow"}, 403, "site admins"),
        ("alice", {"kernel": {**KERNEL, "url": "file:///boot/vmlinuz"}}, 403, "site admins"),
        ("root", {"url": "file:///etc/../etc/shadow"}, 422, ".."),
        ("root", {"url": "file:///no/such/file.qcow2"}, 422, "not a regular file"),
        ("root", {"url": "file:///etc"}, 422, "not a regular file"),
        ("root", {"url": "file://otherhost/etc/hostname"}, 422, "local path"),
        ("root", {"url": "file:relative/path"}, 422, "absolute path"),
        ("alice", {"url": "ftp://127.0.0.1/x.qcow2"}, 422, "'ftp' is not supported"),
        ("alice", {"url": "gopher://127.0.0.1/x"}, 422, "not supported"),
        ("alice", {"url": "javascript:alert(1)"}, 422, "not supported"),
        ("alice", {"url": "127.0.0.1/x.qcow2"}, 422, "not supported"),
        ("alice", {"url": "http:///x.qcow2"}, 422, "without a host"),
        ("alice", {"url": "http://127.0.0.1:99999/x"}, 422, "malformed"),
        ("alice", {"url": "http://127.0.0.1/a b"}, 422, "spaces"),
        ("alice", {"url": ""}, 422, "url"),
        ("alice", {"sha256": None}, 422, "sha1 and/or sha256"),
        ("alice", {"sha256": "zz" * 32}, 422, "sha256"),
        ("alice", {"sha1": "ab" * 21}, 422, "sha1"),
        ("alice", {"size": 0}, 422, "size"),
        ("alice", {"size": -5}, 422, "size"),
        ("alice", {"size": 60 * 1024**3}, 422, "image cache"),
        ("alice", {"format": "vmdk"}, 422, "format"),
        ("alice", {"public": True}, 403, "public"),
        ("alice", {"initrd": KERNEL}, 422, "need a kernel"),
        ("alice", {"cmdline": "quiet"}, 422, "need a kernel"),
        ("alice", {"kernel": KERNEL, "cmdline": "a\nb"}, 422, "one line"),
        ("alice", {"kernel": {**KERNEL, "sha256": None}}, 422, "sha1 and/or sha256"),
        ("alice", {"surprise": 1}, 422, "surprise"),
        ("alice", {"name": "tiny"}, 409, "already exists"),
    ],
)
async def test_bad_registrations(
    make_site: Any, user: str, changes: dict[str, Any], status: int, needle: str
) -> None:
    site = await make_site()
    body = {k: v for k, v in {**GOOD, **changes}.items() if v is not None}
    resp = await site.client.post("/api/v1/images", json=body, headers=auth(user))
    assert resp.status == status, await resp.text()
    error = (await resp.json())["error"]
    assert needle in error["message"] or needle in str(error.get("details")), error
    assert [i["name"] for i in await list_images(site, "root")] == ["tiny"]


async def test_duplicate_registration_changes_nothing(make_site: Any) -> None:
    site = await make_site()
    resp = await site.client.post("/api/v1/images", json=GOOD, headers=auth("alice"))
    assert resp.status == 201
    before = await list_images(site, "root")
    resp = await site.client.post(
        "/api/v1/images", json={**GOOD, "size": 2000}, headers=auth("bob")
    )
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "image_exists"
    assert await list_images(site, "root") == before


@pytest.mark.parametrize("name", ["..", "..%2F..%2Fetc", "no-such", ".partial"])
async def test_unknown_image_names(make_site: Any, name: str) -> None:
    site = await make_site()
    for method in ("GET", "DELETE"):
        resp = await site.client.request(method, f"/api/v1/images/{name}", headers=auth("root"))
        assert resp.status == 404, (method, name)
        assert (await resp.json())["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"save": {"name": "../x"}}, 422),
        ({"save": {"name": "ok", "extra": 1}}, 422),
        ({"save": {}}, 422),
        ({"save": "name"}, 422),
        ({"keep": True}, 422),
        ({"save": {"name": "tiny"}}, 409),
    ],
)
async def test_bad_save_requests_leave_the_vm_running(
    make_site: Any, body: dict[str, Any], status: int
) -> None:
    site = await make_site()
    vm = await site.create()
    await site.wait(vm["id"])
    resp = await site.client.post(f"/api/v1/vms/{vm['id']}/stop", json=body, headers=auth("alice"))
    assert resp.status == status, await resp.text()
    assert "error" in await resp.json()
    after = await site.wait(vm["id"])
    assert after["state"] == "running"
    assert [i["name"] for i in await list_images(site, "root")] == ["tiny"]


async def test_bad_kill_query(make_site: Any) -> None:
    site = await make_site()
    vm = await site.create()
    await site.wait(vm["id"])
    resp = await site.client.delete(
        f"/api/v1/vms/{vm['id']}", params={"force": "maybe"}, headers=auth("alice")
    )
    assert resp.status == 422
    assert (await site.wait(vm["id"]))["state"] == "running"
