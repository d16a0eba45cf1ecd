"""Fixtures for site agent tests: a site app on fake hypervisor hosts, with API tokens."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from auth.tokens import hash_token
from core.app import SERVER_LIMITS
from site_agent.compute.fake_driver import FakeDriver
from site_agent.config import HostConfig, SiteConfig
from site_agent.host_pool import Host, HostPool

TOKENS = {
    "alice": "alice-secret-token",
    "bob": "bob-secret-token",
    "carol": "carol-secret-token",
    "root": "admin-secret-token",
}


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[user]}"}


@pytest.fixture
def small_image(tmp_path: Path) -> Path:
    """A 16 MiB qcow2 'image' (the fake driver does not boot it)."""
    path = tmp_path / "images" / "tiny.qcow2"
    path.parent.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)
    return path


def site_config(state_dir: Path, database_url: str, image: Path, **overrides: Any) -> SiteConfig:
    data: dict[str, Any] = {
        "site": {"name": "test-site", "state_dir": state_dir, "database_url": database_url},
        "hosts": [{"uri": "fake://host-a"}, {"uri": "fake://host-b"}],
        "images": [{"name": "tiny", "disk": image}],
        "auth": {
            "tokens": [
                {
                    "token_hash": hash_token(TOKENS["alice"]),
                    "account": "alice",
                    "groups": ["physics"],
                },
                {
                    "token_hash": hash_token(TOKENS["carol"]),
                    "account": "carol",
                    "groups": ["physics"],
                },
                {"token_hash": hash_token(TOKENS["bob"]), "account": "bob"},
                {"token_hash": hash_token(TOKENS["root"]), "account": "root", "admin": True},
            ]
        },
        "vm": {"stop_timeout_seconds": 2},
    }
    for key, value in overrides.items():
        data[key] = value if not isinstance(value, dict) else {**data.get(key, {}), **value}
    return SiteConfig.model_validate(data)


@dataclass
class FakeSite:
    client: TestClient
    drivers: dict[str, FakeDriver]
    config: SiteConfig

    async def create(self, user: str = "alice", **body: Any) -> dict[str, Any]:
        body.setdefault("image", "tiny")
        resp = await self.client.post("/api/v1/vms", json=body, headers=auth(user))
        assert resp.status == 202, await resp.text()
        vm: dict[str, Any] = (await resp.json())["vms"][0]
        return vm

    async def wait(self, vm_id: str, goal: str = "ready", user: str = "alice") -> dict[str, Any]:
        resp = await self.client.get(
            f"/api/v1/vms/{vm_id}", params={"wait": goal, "timeout": "10"}, headers=auth(user)
        )
        assert resp.status == 200, await resp.text()
        vm: dict[str, Any] = await resp.json()
        return vm


@pytest.fixture
async def make_site(
    aiohttp_client: Any, tmp_path: Path, database_url: str, small_image: Path
) -> AsyncIterator[Callable[..., Any]]:
    """A site on fake hosts: ``await make_site(hosts={"fake://a": (cpus, mib)}, **config)``."""
    from site_agent.app import build_site_app

    async def factory(
        hosts: dict[str, tuple[int, int]] | None = None,
        drivers: dict[str, FakeDriver] | None = None,
        **overrides: Any,
    ) -> FakeSite:
        """A site app; pass ``drivers`` from an earlier site to simulate an agent restart."""
        hosts = hosts or {"fake://host-a": (8, 16384), "fake://host-b": (8, 16384)}
        if drivers is None:
            drivers = {uri: FakeDriver(uri, cpus=c, memory_mib=m) for uri, (c, m) in hosts.items()}
        overrides.setdefault("hosts", [{"uri": uri} for uri in drivers])
        config = site_config(tmp_path / "state", database_url, small_image, **overrides)
        pool = HostPool(
            Host(
                config=HostConfig(uri=uri, reserved_memory_mib=0, cpu_overcommit=1.0), driver=driver
            )
            for uri, driver in drivers.items()
        )
        server = TestServer(build_site_app(config, hosts=pool))
        await server.start_server(**SERVER_LIMITS)
        client = await aiohttp_client(server)
        return FakeSite(client=client, drivers=drivers, config=config)

    yield factory
