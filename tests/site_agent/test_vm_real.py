"""Real guests: the site agent on libvirtd + QEMU (TCG here) with the busybox guest.

create -> running -> readiness line -> kill -> quarantine -> cleanup; stop;
reboot; five concurrent creates.
"""

from __future__ import annotations

import asyncio
import tomllib
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
from site_agent.guest.site_image import guest_image_toml
from tests.helpers import require_libvirt, require_tool
from tests.site_agent.real_site import (
    LIBVIRT_URI,
    guest,
    qemu_reachable_dir,
    stratus_domains,
    wait_for_console,
)

pytestmark = pytest.mark.libvirt
TOKEN = "real-vm-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class RealSite:
    client: TestClient
    state: Path
    created: list[str] = field(default_factory=list)


@pytest.fixture
async def real_site(aiohttp_client: Any) -> AsyncIterator[RealSite]:
    require_libvirt(LIBVIRT_URI)
    require_tool("qemu-system-x86_64")
    image = guest()
    with qemu_reachable_dir("stratus-site-test-") as state:
        config = SiteConfig.model_validate(
            tomllib.loads(f"""
[site]
name = "real"
state_dir = "{state}"
[[hosts]]
uri = "{LIBVIRT_URI}"
[vm]
stop_timeout_seconds = 20
ready_timeout_seconds = 60
[quarantine]
period_seconds = 3600
[[auth.tokens]]
token_hash = "{hash_token(TOKEN)}"
account = "tester"
admin = true
{guest_image_toml(image)}""")
        )
        server = TestServer(build_site_app(config))
        await server.start_server(**SERVER_LIMITS)
        client = await aiohttp_client(server)
        site = RealSite(client, state)
        try:
            yield site
        finally:
            for vm_id in site.created:
                await client.delete(f"/api/v1/vms/{vm_id}", headers=HEADERS)
            await client.close()
        leftovers = stratus_domains() & set(site.created)
        assert not leftovers, f"domains left behind: {leftovers}"


async def create(site: RealSite, **body: Any) -> list[dict[str, Any]]:
    body.setdefault("image", "busybox")
    body.setdefault("instance_type", "t1.micro")
    resp = await site.client.post("/api/v1/vms", json=body, headers=HEADERS)
    assert resp.status == 202, await resp.text()
    vms: list[dict[str, Any]] = (await resp.json())["vms"]
    site.created.extend(v["id"] for v in vms)
    return vms


async def wait(
    client: TestClient, vm_id: str, goal: str = "ready", timeout: float = 90
) -> dict[str, Any]:
    resp = await client.get(
        f"/api/v1/vms/{vm_id}", params={"wait": goal, "timeout": str(timeout)}, headers=HEADERS
    )
    vm: dict[str, Any] = await resp.json()
    return vm


async def console(client: TestClient, vm_id: str) -> str:
    body = await (await client.get(f"/api/v1/vms/{vm_id}/console", headers=HEADERS)).json()
    output: str = body["output"]
    return output


async def wait_state(
    client: TestClient, vm_id: str, state: str, timeout: float = 60
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        vm: dict[str, Any] = await (
            await client.get(f"/api/v1/vms/{vm_id}", headers=HEADERS)
        ).json()
        if vm["state"] == state or asyncio.get_running_loop().time() > deadline:
            return vm
        await asyncio.sleep(0.25)


async def test_create_ready_kill_quarantine_cleanup(real_site: RealSite) -> None:
    client, state = real_site.client, real_site.state
    script = "#!/bin/sh\necho USER-DATA-RAN role=$(. /etc/stratus/context; echo $ROLE)\n"
    [vm] = await create(real_site, name="real-1", context={"ROLE": "worker"}, user_data=script)
    ready = await wait(client, vm["id"])
    assert ready["state"] == "running" and ready["ready"], ready
    assert f"STRATUS-READY {vm['id']} none" in await console(client, vm["id"])
    # The guest runs user data in the background AFTER printing its readiness line:
    # wait for the script's own output, never for a fixed delay.
    output = await wait_for_console(client, vm["id"], "USER-DATA-RAN", headers=HEADERS)
    assert "USER-DATA-RAN role=worker" in output
    assert vm["id"] in stratus_domains()

    resp = await client.delete(f"/api/v1/vms/{vm['id']}", headers=HEADERS)
    assert (await resp.json())["state"] == "done"
    assert vm["id"] not in stratus_domains()
    quarantined = state / "quarantine" / vm["id"]
    assert (quarantined / "root.qcow2").exists() and (quarantined / "console.log").exists()
    # The sweeper deletes expired entries (here: everything, by sweeping "in the future").
    from datetime import timedelta

    from core.db import utcnow
    from site_agent.api.keys import QUARANTINE

    deleted = client.app[QUARANTINE].sweep(utcnow() + timedelta(hours=2))
    assert deleted == [vm["id"]]
    assert not quarantined.exists()


async def test_stop_is_a_clean_acpi_poweroff(real_site: RealSite) -> None:
    client = real_site.client
    [vm] = await create(real_site)
    await wait(client, vm["id"])
    resp = await client.post(f"/api/v1/vms/{vm['id']}/stop", headers=HEADERS)
    assert resp.status == 202
    final = await wait_state(client, vm["id"], "done")
    assert final["state"] == "done"
    assert "guest powered off cleanly" in final["state_reason"]
    # The serial log is written by virtlogd, which may still hold the guest's last lines
    # when the domain is already gone: wait for the line.
    await wait_for_console(client, vm["id"], f"STRATUS-SHUTDOWN {vm['id']}", headers=HEADERS)
    assert vm["id"] not in stratus_domains()


async def test_reboot_comes_back_ready(real_site: RealSite) -> None:
    client = real_site.client
    [vm] = await create(real_site)
    await wait(client, vm["id"])
    resp = await client.post(f"/api/v1/vms/{vm['id']}/reboot", headers=HEADERS)
    assert resp.status == 200 and (await resp.json())["ready"] is False
    again = await wait(client, vm["id"])
    assert again["ready"] and again["state"] == "running"
    assert (await console(client, vm["id"])).count(f"STRATUS-READY {vm['id']}") == 2


async def test_five_concurrent_creates(real_site: RealSite) -> None:
    client = real_site.client
    batches = await asyncio.gather(*(create(real_site, name=f"par-{i}") for i in range(5)))
    ids = [b[0]["id"] for b in batches]
    states = await asyncio.gather(*(wait(client, i) for i in ids))
    assert all(s["state"] == "running" and s["ready"] for s in states), states
    assert set(ids) <= stratus_domains()
    await asyncio.gather(*(client.delete(f"/api/v1/vms/{i}", headers=HEADERS) for i in ids))
    assert not (set(ids) & stratus_domains())
