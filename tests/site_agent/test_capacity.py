"""The site's heartbeat report (site_agent.capacity): built from the services it is given."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from auth.principal import Principal, Role
from core.app import SERVER_LIMITS
from core.resources.images import ImageRegister
from core.resources.networks import NetworkType
from core.resources.vms import VmCreate
from core.site_report import SiteReport
from site_agent.api.keys import HOSTS, IMAGES, NETWORKS, VM_MANAGER
from site_agent.app import build_site_app
from site_agent.capacity import CapacityReport
from site_agent.config import FederationLinkConfig, SiteConfig

BROKER = Principal(account="broker", identity="broker", method="token")


def link(**values: Any) -> FederationLinkConfig:
    base: dict[str, Any] = {
        "broker_url": "https://broker.test:8450/",
        "site_cert": "/c.pem",
        "site_key": "/k.pem",
        "public_url": "http://127.0.0.1:8440",
        "price_per_hour": 0.02,
        "location": {"country": "FR"},
        "allowed_vos": ["atlas"],
    }
    return FederationLinkConfig.model_validate({**base, **values})


@pytest.fixture
async def site_app(tmp_path: Path, small_image: Path) -> AsyncIterator[web.Application]:
    config = SiteConfig.model_validate(
        {
            "site": {"name": "site-x", "state_dir": str(tmp_path / "state")},
            "hosts": [
                {
                    "uri": "fake://h1",
                    "cpu_overcommit": 0.5,
                    "reserved_memory_mib": 0,
                    "tags": ["ssd", "gpu"],
                },
                {"uri": "fake://h2", "cpu_overcommit": 0.25, "reserved_memory_mib": 0},
            ],
            "images": [{"name": "tiny", "disk": str(small_image)}],
            "networks": [
                {"name": "pub", "type": "public", "cidr": "198.18.0.0/29"},
                {"name": "lan", "type": "local", "cidr": "198.18.1.0/29"},
                {"name": "lan2", "type": "local", "cidr": "198.18.2.0/30"},
            ],
        }
    )
    server = TestServer(build_site_app(config))
    await server.start_server(**SERVER_LIMITS)
    try:
        yield server.app
    finally:
        await server.close()


def capacity(app: web.Application, **values: Any) -> CapacityReport:
    return CapacityReport(
        site="site-x",
        link=link(**values),
        hosts=app[HOSTS],
        usage=app[VM_MANAGER].usage,
        images=app[IMAGES],
        networks=app[NETWORKS],
    )


async def test_the_report_is_what_the_site_can_still_take(site_app: web.Application) -> None:
    report = await capacity(site_app).report()
    assert isinstance(report, SiteReport)
    assert (report.site, report.public_url, report.available) == (
        "site-x",
        "http://127.0.0.1:8440",
        True,
    )
    assert (report.price_per_hour, report.location, report.allowed_vos) == (
        0.02,
        {"country": "FR"},
        ["atlas"],
    )
    hosts = {h.name: h for h in report.hosts}
    assert (hosts["fake://h1"].free_cpus, hosts["fake://h1"].free_memory_mib) == (4, 16384)
    assert (hosts["fake://h2"].free_cpus, hosts["fake://h2"].free_memory_mib) == (2, 16384)
    assert hosts["fake://h1"].tags == ["gpu", "ssd"] and hosts["fake://h2"].tags == []
    assert all(h.simulated for h in report.hosts) and report.simulated
    assert report.cached_images == ["tiny"] and report.fetchable_images == []
    pools = {p.name: p for p in report.networks}
    assert [p.name for p in report.networks] == ["pub", "lan", "lan2"]
    assert pools["pub"].default and not pools["lan"].default
    assert (pools["pub"].type, pools["pub"].cidr, pools["pub"].free) == (
        NetworkType.PUBLIC,
        "198.18.0.0/29",
        6,
    )
    # free_addresses sums the pools of each type (a /29 has 6 addresses, a /30 2).
    assert report.free_addresses == {NetworkType.PUBLIC: 6, NetworkType.LOCAL: 8}
    # What the broker validates is exactly what the site sends.
    assert SiteReport.model_validate(report.model_dump(mode="json")) == report


async def test_a_vm_takes_its_host_capacity_and_its_address(site_app: web.Application) -> None:
    report = capacity(site_app)
    await site_app[VM_MANAGER].create(BROKER, VmCreate(image="tiny", vcpus=2, memory_mib=1024))
    after = await report.report()
    free = {h.name: (h.free_cpus, h.free_memory_mib) for h in after.hosts}
    assert sorted(free.values()) == [(2, 15360), (2, 16384)], "one host lost 2 vCPUs and 1 GiB"
    assert {p.name: p.free for p in after.networks}["pub"] == 5
    assert after.free_addresses[NetworkType.PUBLIC] == 5


async def test_only_public_images_are_reported(site_app: web.Application) -> None:
    images = site_app[IMAGES]
    admin = Principal(
        account="root", identity="root", method="token", roles=frozenset({Role.SITE_ADMIN})
    )
    body = {"url": "http://127.0.0.1:9/x", "size": 10, "sha256": "ab" * 32}
    await images.register(BROKER, ImageRegister(name="private-one", **body))
    await images.register(admin, ImageRegister(name="shared", public=True, **body))
    report = await capacity(site_app).report()
    # Registered, not cached yet: fetched on first use. Nobody's private images are reported.
    assert report.fetchable_images == ["shared"]
    assert report.cached_images == ["tiny"]
