"""Networks through the site API on fake hosts (SQLite and PostgreSQL): pools, leases, NICs."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pycdlib

from tests.site_agent.conftest import FakeSite, auth

#: /29: .1 gateway, .2-.5 handed out automatically, .6 fixed (only on request).
POOLS = [
    {
        "name": "public",
        "type": "public",
        "cidr": "198.18.10.0/29",
        "gateway": "198.18.10.1",
        "dns": ["198.18.10.1"],
        "fixed": ["198.18.10.6"],
    },
    {"name": "private", "type": "private", "cidr": "198.18.20.0/24"},
]


async def network_site(make_site: Any, **overrides: Any) -> FakeSite:
    site: FakeSite = await make_site(networks=POOLS, **overrides)
    return site


def read_seed(path: Path, name: str) -> str:
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
    finally:
        iso.close()
    return out.getvalue().decode()


async def get(site: FakeSite, path: str, user: str = "alice") -> Any:
    resp = await site.client.get(f"/api/v1{path}", headers=auth(user))
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def post_vm(site: FakeSite, user: str = "alice", **body: Any) -> tuple[int, dict[str, Any]]:
    body.setdefault("image", "tiny")
    resp = await site.client.post("/api/v1/vms", json=body, headers=auth(user))
    data: dict[str, Any] = await resp.json()
    return resp.status, data


async def test_pools_are_listed_with_sizes(make_site: Any) -> None:
    site = await network_site(make_site)
    listed = (await get(site, "/networks"))["networks"]
    assert [(n["name"], n["type"], n["default"]) for n in listed] == [
        ("public", "public", True),
        ("private", "private", False),
    ]
    public = listed[0]
    assert (public["size"], public["leased"], public["free"]) == (5, 0, 5)
    assert listed[1]["size"] == 254
    detail = await get(site, "/networks/public")
    # The range is the whole subnet; the gateway and the fixed address are carved out of it.
    assert (detail["range_start"], detail["range_end"], detail["fixed"]) == (
        "198.18.10.1",
        "198.18.10.6",
        ["198.18.10.6"],
    )
    assert detail["leases"] == []


async def test_isolated_networks_are_ensured_on_every_host(make_site: Any) -> None:
    site = await network_site(make_site)
    for driver in site.drivers.values():
        assert set(driver.networks) == {
            n for n in driver.networks if n.startswith(("stratus-public-", "stratus-private-"))
        }
        assert len(driver.networks) == 2
        for spec in driver.networks.values():
            assert len(spec.bridge) <= 15 and spec.host_address is None


async def test_a_vm_gets_a_lease_a_nic_and_a_network_config(make_site: Any) -> None:
    site = await network_site(make_site)
    vm = await site.create()
    assert (vm["network"], vm["address"]) == ("public", "198.18.10.2")
    mac = vm["mac"]
    assert int(mac[:2], 16) & 0x02
    ready = await site.wait(vm["id"])
    assert ready["state"] == "running"
    domain = next(d.domains[vm["id"]] for d in site.drivers.values() if vm["id"] in d.domains)
    [nic] = domain.spec.nics
    assert nic.mac == mac and nic.network.startswith("stratus-public-")
    assert [d.target for d in domain.spec.disks] == ["vda", "vdb"]  # root, cidata seed
    seed = read_seed(site.config.site.state_dir / "vms" / vm["id"] / "cidata.iso", "network-config")
    assert f"mac_address: '{mac}'" in seed
    assert "address: 198.18.10.2/29" in seed and "gateway: 198.18.10.1" in seed
    # The owner sees the lease; another user does not; an admin sees all.
    leases = (await get(site, "/networks/public"))["leases"]
    assert [(le["address"], le["vm_id"]) for le in leases] == [("198.18.10.2", vm["id"])]
    assert (await get(site, "/networks/public", "bob"))["leases"] == []
    assert len((await get(site, "/networks/public", "root"))["leases"]) == 1
    assert (await get(site, "/networks", "bob"))["networks"][0]["leased"] == 1


async def test_kill_releases_the_address_for_the_next_vm(make_site: Any) -> None:
    site = await network_site(make_site)
    first = await site.create()
    await site.wait(first["id"])
    resp = await site.client.delete(f"/api/v1/vms/{first['id']}", headers=auth("alice"))
    killed = await resp.json()
    assert killed["state"] == "done" and "address 198.18.10.2 released" in killed["state_reason"]
    assert killed["address"] == "198.18.10.2"  # kept on the VM for the record
    assert (await get(site, "/networks"))["networks"][0]["leased"] == 0
    second = await site.create()
    assert second["address"] == "198.18.10.2"
    # Killed while still being created: the lease goes too.
    await site.client.delete(f"/api/v1/vms/{second['id']}", headers=auth("alice"))
    assert (await get(site, "/networks"))["networks"][0]["leased"] == 0


async def test_concurrent_creates_never_share_an_address(make_site: Any) -> None:
    site = await network_site(make_site)
    results = await asyncio.gather(*(post_vm(site, name=f"c{i}") for i in range(6)))
    created = [body["vms"][0] for status, body in results if status == 202]
    refused = [body for status, body in results if status != 202]
    addresses = [vm["address"] for vm in created]
    assert len(created) == 4 and len(set(addresses)) == 4
    assert set(addresses) == {"198.18.10.2", "198.18.10.3", "198.18.10.4", "198.18.10.5"}
    for body in refused:
        assert body["error"]["code"] == "no_free_address"
        assert body["error"]["message"] == "no free address in pool public"
    macs = [vm["mac"] for vm in created]
    assert len(set(macs)) == 4


async def test_choosing_the_network_and_a_fixed_address(make_site: Any) -> None:
    site = await network_site(make_site)
    status, body = await post_vm(site, network="public", address="198.18.10.6")
    assert status == 202, body
    assert body["vms"][0]["address"] == "198.18.10.6"
    status, body = await post_vm(site, "bob", address="198.18.10.6")
    assert status == 409 and body["error"]["code"] == "address_in_use", body
    assert "198.18.10.6 of pool public is already leased" in body["error"]["message"]
    status, body = await post_vm(site, network="private", count=2)
    assert status == 202
    assert [v["address"] for v in body["vms"]] == ["198.18.20.1", "198.18.20.2"]
    assert all(v["network"] == "private" for v in body["vms"])


async def test_a_failed_create_releases_its_lease(make_site: Any) -> None:
    site = await network_site(make_site, hosts={"fake://only": (8, 16384)})
    site.drivers["fake://only"].fail_next_start = "boom"
    vm = await site.create()
    final = await site.wait(vm["id"])
    assert final["state"] == "failed"
    assert (await get(site, "/networks"))["networks"][0]["leased"] == 0


async def test_reconcile_releases_the_lease_of_a_vanished_domain(make_site: Any) -> None:
    site = await network_site(make_site, hosts={"fake://only": (8, 16384)})
    vm = await site.create()
    await site.wait(vm["id"])
    driver = site.drivers["fake://only"]
    del driver.domains[vm["id"]]  # the domain vanished behind the agent's back
    from site_agent.api.keys import VM_MANAGER

    await site.client.app[VM_MANAGER].reconcile()
    assert (await site.wait(vm["id"]))["state"] == "failed"
    assert (await get(site, "/networks"))["networks"][0]["leased"] == 0


async def test_a_site_without_networks_gives_no_nic(make_site: Any) -> None:
    site = await make_site()
    assert (await get(site, "/networks"))["networks"] == []
    vm = await site.create()
    assert vm["network"] is None and vm["address"] is None
    await site.wait(vm["id"])
    domain = next(d.domains[vm["id"]] for d in site.drivers.values() if vm["id"] in d.domains)
    assert domain.spec.nics == ()
