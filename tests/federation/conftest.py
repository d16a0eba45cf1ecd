"""Fixtures of the federation tests: ``moto_server``, a real site agent, loopback apps.

``moto_server`` (EC2 API) is started once per session on 127.0.0.1 with a free
port (``tests/moto_cloud.py``) and reset before each test that uses it.
Without the binary the tests that need it are skipped, except under CI
(``CI=true``) where they fail. The peer provider talks to a real site agent on
simulated hosts (``tests/federation/real_site.py``). Nothing here connects to
any address but 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from federation.model import CloudSize, PublicCloudConfig
from tests.federation.contract_cases import case  # noqa: F401 - the contract suite's fixture
from tests.federation.real_site import RealSite, make_image, running_site, site_config
from tests.helpers import free_port

#: A default moto AMI (moto does not validate AMIs unless told to; any id works).
MOTO_AMI = "ami-03cf127a"


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


@pytest.fixture
async def real_site(tmp_path: Path) -> AsyncIterator[RealSite]:
    """A real site agent on two fake hosts, served on 127.0.0.1 (see ``real_site.py``)."""
    config = site_config(tmp_path / "site", make_image(tmp_path / "images"))
    async with running_site(config) as site:
        yield site
