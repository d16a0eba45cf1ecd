"""Fixtures of the federation tests: a real ``moto_server`` on loopback, a fake site agent.

``moto_server`` (EC2 API) is started once per session on 127.0.0.1 with a free
port and reset before each test that uses it.  Without the binary the tests
that need it are skipped, except under CI (``CI=true``) where they fail.
Nothing here connects to any address but 127.0.0.1.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from federation.model import CloudSize, PublicCloudConfig
from tests.helpers import free_port

#: A default moto AMI (moto does not validate AMIs unless told to; any id works).
MOTO_AMI = "ami-03cf127a"


@dataclass
class FakeSite:
    """State of the fake site agent; tests inspect it."""

    images: frozenset[str] = frozenset({"debian-12"})
    max_vms: int = 10
    vms: dict[str, dict[str, Any]] | None = None
    keys: dict[str, str] | None = None
    posts: int = 0

    def __post_init__(self) -> None:
        self.vms = {}
        self.keys = {}

    def live(self) -> list[dict[str, Any]]:
        assert self.vms is not None
        return [vm for vm in self.vms.values() if vm["state"] != "done"]


ALLOWED_CREATE_FIELDS = {
    "image",
    "name",
    "instance_type",
    "vcpus",
    "memory_mib",
    "count",
    "ssh_keys",
    "user_data",
    "context",
    "host_tags",
}


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def fake_site_app(site: FakeSite) -> web.Application:
    """An aiohttp app answering like a site agent's ``/api/v1/vms`` (refuses like one, too)."""
    assert site.vms is not None and site.keys is not None
    vms, keys = site.vms, site.keys

    async def create(request: web.Request) -> web.Response:
        site.posts += 1
        body = await request.json()
        unknown = set(body) - ALLOWED_CREATE_FIELDS
        if unknown:
            return _error(422, "validation_failed", f"unknown fields {sorted(unknown)}")
        key = request.headers.get("Idempotency-Key")
        if key and key in keys:
            return web.json_response(vms[keys[key]], status=202)
        if body["image"] not in site.images:
            return _error(404, "not_found", f"image {body['image']} not found")
        if len(site.live()) >= site.max_vms:
            return _error(409, "no_capacity", "no host has room for the VM")
        vm_id = "vm-" + uuid.uuid4().hex[:12]
        vms[vm_id] = {
            "id": vm_id,
            "name": body.get("name") or vm_id,
            "image": body["image"],
            "instance_type": body.get("instance_type"),
            "vcpus": body.get("vcpus") or 1,
            "memory_mib": body.get("memory_mib") or 512,
            "state": "pending",
            "ip": "198.18.0.10",
            "created_at": "2024-01-01T00:00:00Z",
        }
        if key:
            keys[key] = vm_id
        return web.json_response(vms[vm_id], status=202)

    async def get(request: web.Request) -> web.Response:
        vm = vms.get(request.match_info["vm_id"])
        if vm is None:
            return _error(404, "not_found", "no such VM")
        return web.json_response(vm)

    async def listing(request: web.Request) -> web.Response:
        return web.json_response({"vms": list(vms.values())})

    async def kill(request: web.Request) -> web.Response:
        vm = vms.get(request.match_info["vm_id"])
        if vm is None:
            return _error(404, "not_found", "no such VM")
        vm["state"] = "done"
        return web.json_response(vm, status=202)

    app = web.Application()
    app.router.add_post("/api/v1/vms", create)
    app.router.add_get("/api/v1/vms", listing)
    app.router.add_get("/api/v1/vms/{vm_id}", get)
    app.router.add_delete("/api/v1/vms/{vm_id}", kill)
    return app


@dataclass
class RunningApp:
    url: str
    runner: web.AppRunner


async def serve_on_loopback(app: web.Application) -> RunningApp:
    """Run ``app`` on 127.0.0.1 with a kernel-chosen port."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return RunningApp(f"http://127.0.0.1:{port}", runner)


@pytest.fixture
def closed_loopback_url() -> str:
    """``http://127.0.0.1:PORT`` where nothing listens (connections are refused)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def new_fake_site() -> Callable[..., tuple[FakeSite, web.Application]]:
    """Factory: a fake site agent's state and its aiohttp app (serve it with ``serve``)."""

    def make(**kwargs: Any) -> tuple[FakeSite, web.Application]:
        state = FakeSite(**kwargs)
        return state, fake_site_app(state)

    return make


def make_cloud_config(endpoint: str, name: str = "aws-test") -> PublicCloudConfig:
    """A public cloud config for the EC2 API at ``endpoint`` (``http://127.0.0.1:PORT``)."""
    host, port = endpoint.removeprefix("http://").split(":")
    return PublicCloudConfig(
        name=name,
        driver="ec2",
        key="AKIDTESTING",
        secret="testing",
        region="us-east-1",
        host=host,
        port=int(port),
        secure=False,
        images={"debian-12": MOTO_AMI},
        sizes={
            "m1.small": CloudSize("t2.micro", 1, 1024, 0.0116),
            "m1.large": CloudSize("t3.medium", 2, 4096, 0.0416),
        },
    )


@pytest.fixture
def cloud_config_for() -> Callable[[str], PublicCloudConfig]:
    """Factory: the test cloud config for an EC2 endpoint URL."""
    return make_cloud_config


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    """Factory: run an aiohttp app on 127.0.0.1 (port 0) and return its URL; stopped after."""
    running: list[RunningApp] = []

    async def start(app: web.Application) -> str:
        app_ = await serve_on_loopback(app)
        running.append(app_)
        return app_.url

    yield start
    for app_ in running:
        await app_.runner.cleanup()
