"""Helpers for volume tests against a site on fake hosts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from site_agent.compute.fake_driver import FakeDomain
from tests.site_agent.conftest import FakeSite, auth


async def call(
    site: FakeSite, method: str, path: str, user: str = "alice", body: Any = None
) -> tuple[int, Any]:
    resp = await site.client.request(method, f"/api/v1{path}", json=body, headers=auth(user))
    return resp.status, await resp.json()


async def ok(site: FakeSite, method: str, path: str, user: str = "alice", body: Any = None) -> Any:
    status, data = await call(site, method, path, user, body)
    assert status in (200, 202), (status, data)
    return data


async def new_volume(site: FakeSite, user: str = "alice", **body: Any) -> dict[str, Any]:
    body.setdefault("size_gib", 1)
    status, data = await call(site, "POST", "/volumes", user, body)
    assert status == 202, data
    volume: dict[str, Any] = data
    return volume


async def running_vm(site: FakeSite, user: str = "alice", **body: Any) -> dict[str, Any]:
    vm = await site.create(user, **body)
    ready = await site.wait(vm["id"], user=user)
    assert ready["state"] == "running", ready
    return ready


def domain(site: FakeSite, vm_id: str) -> FakeDomain:
    return next(d.domains[vm_id] for d in site.drivers.values() if vm_id in d.domains)


def volumes_dir(site: FakeSite) -> Path:
    return site.config.site.state_dir / "volumes"


def volume_files(site: FakeSite) -> list[str]:
    directory = volumes_dir(site)
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def qemu_info(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", "-U", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    info: dict[str, Any] = json.loads(out)
    return info


async def snapshot(site: FakeSite) -> tuple[Any, ...]:
    """Everything a refused request must leave unchanged: volumes, files, VMs, disks, leases."""
    volumes = (await ok(site, "GET", "/volumes?all=true", "root"))["volumes"]
    vms = (await ok(site, "GET", "/vms?all=true", "root"))["vms"]
    disks = {
        vm["id"]: (await ok(site, "GET", f"/vms/{vm['id']}/disks", "root"))["disks"] for vm in vms
    }
    domains = {
        vm_id: sorted(dom.disks) for d in site.drivers.values() for vm_id, dom in d.domains.items()
    }
    networks = (await ok(site, "GET", "/networks", "root"))["networks"]
    return (
        [(v["id"], v["tag"], v["visibility"], v["state"], v["attached"]) for v in volumes],
        volume_files(site),
        [(v["id"], v["state"]) for v in vms],
        disks,
        domains,
        [(n["name"], n["leased"]) for n in networks],
    )
