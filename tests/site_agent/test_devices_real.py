"""Real guests with networks and volumes: libvirtd + QEMU (TCG) and the busybox guest.

One site with an isolated pool of two addresses in 198.18.0.0/15 (no
forwarding, no host address: nothing leaves the bridge). Two VMs:

* each reports its leased address in its readiness line;
* a third VM is refused: ``409 no free address in pool ...``;
* a volume hot-attached to a running guest shows up in it
  (``STRATUS-BLOCK add vdc``) and goes again on detach;
* a read-only volume is attached to both running guests at once.

Afterwards no domain, network or file of the test is left.
"""

from __future__ import annotations

import asyncio
import time
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from auth.tokens import hash_token
from core.app import SERVER_LIMITS
from site_agent.api.keys import HOSTS, NETWORKS
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
TOKEN = "real-devices-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def stratus_networks() -> set[str]:
    import libvirt

    conn = libvirt.open(LIBVIRT_URI)
    try:
        return {n.name() for n in conn.listAllNetworks() if n.name().startswith("stratus-")}
    finally:
        conn.close()


@dataclass
class Site:
    client: TestClient
    state: Path
    vms: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        resp = await self.client.request(method, f"/api/v1{path}", json=body, headers=HEADERS)
        return resp.status, await resp.json()

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, data = await self.call(method, path, body)
        assert status in (200, 202), (status, data)
        return data

    async def console(self, vm_id: str) -> str:
        output: str = (await self.ok("GET", f"/vms/{vm_id}/console"))["output"]
        return output

    async def wait_console(
        self, vm_id: str, line: str, times: int = 1, timeout: float = 30
    ) -> float:
        """Seconds until ``line`` has appeared ``times`` times on the VM's console."""
        start = time.monotonic()
        await wait_for_console(
            self.client, vm_id, line, headers=HEADERS, times=times, timeout=timeout
        )
        return time.monotonic() - start


@pytest.fixture
async def site(aiohttp_client: Any) -> AsyncIterator[Site]:
    require_libvirt(LIBVIRT_URI)
    require_tool("qemu-system-x86_64")
    image = guest()
    with qemu_reachable_dir("stratus-devices-test-") as state:
        config = SiteConfig.model_validate(
            tomllib.loads(f"""
[site]
name = "devices"
state_dir = "{state}"
[[hosts]]
uri = "{LIBVIRT_URI}"
[vm]
stop_timeout_seconds = 10
ready_timeout_seconds = 90
[[networks]]
name = "public"
type = "public"
cidr = "198.18.30.0/29"
range_start = "198.18.30.2"
range_end = "198.18.30.3"
[[auth.tokens]]
token_hash = "{hash_token(TOKEN)}"
account = "tester"
admin = true
{guest_image_toml(image)}""")
        )
        server = TestServer(build_site_app(config))
        await server.start_server(**SERVER_LIMITS)
        client = await aiohttp_client(server)
        ours = {pool.network_name for pool in client.app[NETWORKS].pools}
        site = Site(client, state)
        try:
            assert ours <= stratus_networks()  # made at start-up
            yield site
        finally:
            for vm_id in site.vms:
                await client.delete(f"/api/v1/vms/{vm_id}", headers=HEADERS)
            for volume_id in site.volumes:
                await client.delete(f"/api/v1/volumes/{volume_id}", headers=HEADERS)
            hosts = client.app[HOSTS].hosts.values()
            await client.app[NETWORKS].remove_networks(h.driver for h in hosts)
            await client.close()
        assert not (stratus_domains() & set(site.vms)), "domains left behind"
        assert not (ours & stratus_networks()), "networks left behind"
        assert not list((state / "volumes").iterdir()), "volume files left behind"
    for name, seconds in site.timings.items():
        print(f"\n{name}: {seconds:.2f} s")


async def test_leases_hotplug_and_shared_read_only_volume(site: Site) -> None:
    started = time.monotonic()
    created = await site.ok(
        "POST", "/vms", {"image": "busybox", "instance_type": "t1.micro", "count": 2}
    )
    vms = created["vms"]
    site.vms += [vm["id"] for vm in vms]
    assert sorted(vm["address"] for vm in vms) == ["198.18.30.2", "198.18.30.3"]

    # (c) the pool has two addresses: a third VM is refused, nothing is created.
    status, body = await site.call(
        "POST", "/vms", {"image": "busybox", "instance_type": "t1.micro"}
    )
    assert status == 409, body
    assert body["error"]["message"] == "no free address in pool public"

    # (b) each guest configures its leased address and reports it when ready.
    ready = await asyncio.gather(
        *(site.ok("GET", f"/vms/{vm['id']}?wait=ready&timeout=90") for vm in vms)
    )
    site.timings["create with network -> ready (2 VMs, TCG)"] = time.monotonic() - started
    for vm in ready:
        assert vm["ready"], vm
        assert vm["ip"] == vm["address"], vm
        assert f"STRATUS-READY {vm['id']} {vm['address']}" in await site.console(vm["id"])
    first, second = (vm["id"] for vm in ready)

    # (a) a volume hot-attached to a running guest is seen in it, and goes again on detach.
    volume = await site.ok("POST", "/volumes", {"size_gib": 1, "tag": "hotplug"})
    site.volumes.append(volume["id"])
    t0 = time.monotonic()
    disk = await site.ok("POST", f"/volumes/{volume['id']}/attach", {"vm_id": first})
    site.timings["attach request (hot-plug done)"] = time.monotonic() - t0
    assert disk["device"] == "vdc"  # the name the guest gives it, too
    await site.wait_console(first, "STRATUS-BLOCK add vdc")
    site.timings["attach request -> seen in guest"] = time.monotonic() - t0
    t0 = time.monotonic()
    await site.ok("POST", f"/volumes/{volume['id']}/detach", {"vm_id": first})
    site.timings["detach request (guest released it)"] = time.monotonic() - t0
    await site.wait_console(first, "STRATUS-BLOCK remove vdc")
    site.timings["detach request -> gone in guest"] = time.monotonic() - t0
    assert (await site.ok("GET", f"/volumes/{volume['id']}"))["attached"] == 0

    # (d) a read-only volume attached to both running guests at once.
    shared = await site.ok("POST", "/volumes", {"size_gib": 1, "tag": "shared"})
    site.volumes.append(shared["id"])
    for vm_id in (first, second):
        disk = await site.ok(
            "POST", f"/volumes/{shared['id']}/attach", {"vm_id": vm_id, "readonly": True}
        )
        assert disk["device"] == "vdc" and disk["readonly"]
    await site.wait_console(first, "STRATUS-BLOCK add vdc", times=2)  # after the first volume
    await site.wait_console(second, "STRATUS-BLOCK add vdc")
    shown = await site.ok("GET", f"/volumes/{shared['id']}")
    assert shown["attached"] == 2
    # Killing the VMs detaches the volumes (they are kept; the fixture deletes them).
    for vm_id in (first, second):
        assert (await site.ok("DELETE", f"/vms/{vm_id}"))["state"] == "done"
    assert (await site.ok("GET", f"/volumes/{shared['id']}"))["attached"] == 0
