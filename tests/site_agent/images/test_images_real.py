"""Real guests with the image cache: libvirtd + QEMU (TCG here) and the busybox guest.

A site admin registers the busybox guest by ``file://`` URLs (disk, kernel,
initrd, with sizes and SHA-256); a user boots it (the first use copies and
verifies it into the cache), writes a mark on the root disk, stops the VM
with ``save``; a new VM boots from the saved image and reads the mark back.
"""

from __future__ import annotations

import asyncio
import hashlib
import tomllib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from auth.tokens import hash_token
from core.app import SERVER_LIMITS
from site_agent.app import build_site_app
from site_agent.config import SiteConfig
from tests.helpers import require_libvirt, require_tool
from tests.site_agent.real_site import (
    LIBVIRT_URI,
    guest,
    qemu_reachable_dir,
    stratus_domains,
    wait_for_console,
)

pytestmark = pytest.mark.libvirt
ADMIN = {"Authorization": "Bearer real-images-admin"}
USER = {"Authorization": "Bearer real-images-user"}

# Writes a mark on every virtio disk that is not the cidata ISO (i.e. the root disk).
WRITE_MARK = """#!/bin/sh
for d in /dev/vd?; do
  [ "$(dd if=$d bs=1 skip=32769 count=5 2>/dev/null)" = CD001 ] && continue
  printf '%s\\n' "{mark}" | dd of=$d bs=512 count=1 conv=sync 2>/dev/null
  sync
  echo "MARK-WRITTEN $d"
done
"""
READ_MARK = """#!/bin/sh
for d in /dev/vd?; do
  echo "ROOT-READS $(dd if=$d bs=64 count=1 2>/dev/null | tr -dc 'a-z0-9-')"
done
"""


@dataclass
class Site:
    client: TestClient
    state: Path
    created: list[str] = field(default_factory=list)


@pytest.fixture
async def site(aiohttp_client: Any) -> AsyncIterator[Site]:
    require_libvirt(LIBVIRT_URI)
    require_tool("qemu-system-x86_64")
    with qemu_reachable_dir("stratus-images-test-") as state:
        config = SiteConfig.model_validate(
            tomllib.loads(f"""
[site]
name = "real-images"
state_dir = "{state}"
[[hosts]]
uri = "{LIBVIRT_URI}"
[vm]
stop_timeout_seconds = 20
ready_timeout_seconds = 60
[quarantine]
period_seconds = 0
[[auth.tokens]]
token_hash = "{hash_token("real-images-admin")}"
account = "ops"
admin = true
[[auth.tokens]]
token_hash = "{hash_token("real-images-user")}"
account = "alice"
""")
        )
        server = TestServer(build_site_app(config))
        await server.start_server(**SERVER_LIMITS)
        client = await aiohttp_client(server)
        site = Site(client, state)
        try:
            yield site
        finally:
            for vm_id in site.created:
                await client.delete(f"/api/v1/vms/{vm_id}?force=true", headers=ADMIN)
            await client.close()
        leftovers = stratus_domains() & set(site.created)
        assert not leftovers, f"domains left behind: {leftovers}"


def file_source(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    return {"url": f"file://{path}", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


async def run_vm(site: Site, image: str, user_data: str) -> dict[str, Any]:
    body = {"image": image, "instance_type": "t1.micro", "user_data": user_data}
    resp = await site.client.post("/api/v1/vms", json=body, headers=USER)
    assert resp.status == 202, await resp.text()
    vm: dict[str, Any] = (await resp.json())["vms"][0]
    site.created.append(vm["id"])
    resp = await site.client.get(
        f"/api/v1/vms/{vm['id']}", params={"wait": "ready", "timeout": "120"}, headers=USER
    )
    ready: dict[str, Any] = await resp.json()
    assert ready["state"] == "running" and ready["ready"], ready
    return ready


async def wait_state(site: Site, vm_id: str, state: str, timeout: float = 90) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        vm: dict[str, Any] = await (
            await site.client.get(f"/api/v1/vms/{vm_id}", headers=USER)
        ).json()
        if vm["state"] == state or loop.time() > deadline:
            return vm
        await asyncio.sleep(0.5)


async def test_boot_from_a_file_url_image_and_from_its_saved_copy(site: Site) -> None:
    built = guest()
    register = {
        "name": "busybox",
        **file_source(built.disk),
        "format": "qcow2",
        "kernel": file_source(built.kernel),
        "initrd": file_source(built.initrd),
        "cmdline": built.cmdline,
        "public": True,
        "description": "busybox guest, registered by file:// URL",
    }
    resp = await site.client.post("/api/v1/images", json=register, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["state"] == "pending"

    mark = f"stratus-mark-{uuid.uuid4().hex[:12]}"
    vm = await run_vm(site, "busybox", WRITE_MARK.format(mark=mark))
    await wait_for_console(site.client, vm["id"], "MARK-WRITTEN", headers=USER)
    cached = await (await site.client.get("/api/v1/images/busybox", headers=USER)).json()
    assert cached["state"] == "ready" and cached["cached_bytes"] > register["size"]

    resp = await site.client.post(
        f"/api/v1/vms/{vm['id']}/stop", json={"save": {"name": "marked"}}, headers=USER
    )
    assert resp.status == 202, await resp.text()
    done = await wait_state(site, vm["id"], "done")
    assert "guest powered off cleanly" in done["state_reason"], done
    assert "root disk saved as image 'marked'" in done["state_reason"], done
    saved = await (await site.client.get("/api/v1/images/marked", headers=USER)).json()
    assert saved["state"] == "ready" and saved["owner"] == "alice" and saved["direct_kernel_boot"]

    again = await run_vm(site, "marked", READ_MARK)
    await wait_for_console(site.client, again["id"], f"ROOT-READS {mark}", headers=USER)
    resp = await site.client.delete(f"/api/v1/vms/{again['id']}", headers=USER)
    assert (await resp.json())["state"] == "done"
    assert not ({vm["id"], again["id"]} & stratus_domains())
