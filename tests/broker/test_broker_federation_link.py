"""The site side of the federation link: its config and the capacity it reports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import ValidationError

from auth.principal import Principal
from core.app import SERVER_LIMITS
from site_agent.app import build_site_app
from site_agent.config import SiteConfig
from site_agent.federation_link import FederationLinkConfig, heartbeat_body, site_capacity
from site_agent.vms.models import VmCreate


def link(**values: Any) -> FederationLinkConfig:
    base: dict[str, Any] = {
        "broker_url": "https://broker.test:8450/",
        "site_cert": "/c.pem",
        "site_key": "/k.pem",
        "public_url": "http://127.0.0.1:8440",
    }
    return FederationLinkConfig.model_validate({**base, **values})


def test_the_link_config_needs_https_to_the_broker() -> None:
    assert link().broker_url == "https://broker.test:8450"
    with pytest.raises(ValidationError, match="must be https"):
        link(broker_url="http://broker.test")
    with pytest.raises(ValidationError, match="not an absolute"):
        link(public_url="site-a")
    with pytest.raises(ValidationError, match="interval_seconds"):
        link(interval_seconds=0)


def test_the_heartbeat_adds_what_the_config_says_of_the_site() -> None:
    body = heartbeat_body(
        link(price_per_hour=0.02, location={"country": "FR"}, allowed_vos=["atlas"]),
        {"site": "site-a", "hosts": []},
    )
    assert body == {
        "site": "site-a",
        "hosts": [],
        "public_url": "http://127.0.0.1:8440",
        "price_per_hour": 0.02,
        "location": {"country": "FR"},
        "allowed_vos": ["atlas"],
    }


@pytest.fixture
async def site_app(tmp_path: Path, tiny_image: Path) -> AsyncIterator[web.Application]:
    config = SiteConfig.model_validate(
        {
            "site": {"name": "site-x", "state_dir": str(tmp_path / "state")},
            "hosts": [
                {"uri": "fake://h1", "cpu_overcommit": 0.5, "reserved_memory_mib": 0},
                {"uri": "fake://h2", "cpu_overcommit": 0.25, "reserved_memory_mib": 0},
            ],
            "images": [{"name": "tiny", "disk": str(tiny_image)}],
        }
    )
    server = TestServer(build_site_app(config))
    await server.start_server(**SERVER_LIMITS)
    try:
        yield server.app
    finally:
        await server.close()


async def test_capacity_is_what_the_site_can_still_take(site_app: web.Application) -> None:
    from site_agent.api.keys import VM_MANAGER

    before = await site_capacity(site_app)
    assert before["site"] == "site-x" and before["available"] is True
    assert before["hosts"] == [
        {"name": "fake://h1", "free_cpus": 4, "free_memory_mib": 16384},
        {"name": "fake://h2", "free_cpus": 2, "free_memory_mib": 16384},
    ]
    assert before["cached_images"] == ["tiny"] and before["fetchable_images"] == []
    owner = Principal(account="broker", identity="broker", method="token")
    await site_app[VM_MANAGER].create(owner, VmCreate(image="tiny", vcpus=2, memory_mib=1024), None)
    after = await site_capacity(site_app)
    free = {h["name"]: (h["free_cpus"], h["free_memory_mib"]) for h in after["hosts"]}
    assert sorted(free.values()) == [(2, 15360), (2, 16384)], "one host lost 2 vCPUs and 1 GiB"
