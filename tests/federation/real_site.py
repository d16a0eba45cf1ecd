"""A real site agent (``site_agent.app.build_site_app``) on simulated ``fake://`` hosts.

The peer provider's tests reach it over HTTP on 127.0.0.1 (aiohttp's
``TestServer``, port chosen by the kernel) through ``SiteApi``, as the
broker's account (``broker``, a site admin so it may list what the broker
made for every user) and as users: with ``[federation]`` the site verifies
the broker's delegation assertions against the session's test CA. Nothing
runs: the hosts are the site's in-memory fake driver; everything above the
hypervisor is the real site.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp.test_utils import TestServer

from auth.delegation import DelegationSigner
from auth.tokens import hash_token
from core.app import SERVER_LIMITS
from tests.grid_world import GridWorld
from tests.helpers import free_port

if TYPE_CHECKING:
    from site_agent.config import SiteConfig

SITE_NAME = "peer-site"
IMAGE = "tiny"
POOL = ("private", "private", "198.18.30.0/24")
TOKENS = {"broker": "broker-site-token"}
BROKER = "test-broker"


def make_image(directory: Path) -> Path:
    """A 16 MiB qcow2 file: the site's one configured image (the fake hosts never boot it)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)
    return path


def federation_section(grid: GridWorld) -> dict[str, Any]:
    """``[federation]`` trusting the test CA, with the broker's certificate for 127.0.0.1.

    The site then verifies delegated requests signed with ``grid.server``'s key
    (:func:`broker_signer`). Its heartbeats go to a closed loopback port (they
    fail quietly, once an hour): the broker itself is not needed here.
    """
    return {
        "broker_url": f"https://127.0.0.1:{free_port()}",
        "site_cert": grid.server.cert_path,
        "site_key": grid.server.key_path,
        "ca": grid.ca_dir,
        "public_url": "https://127.0.0.1:8440",
        "interval_seconds": 3600,
    }


def broker_signer(grid: GridWorld) -> DelegationSigner:
    """The broker's delegation signer: ``grid.server`` (CN and SAN 127.0.0.1, the test CA)."""
    return DelegationSigner(broker=BROKER, chain=[grid.server.cert], key=grid.server.key)


def site_config(state_dir: Path, image: Path, **overrides: Any) -> SiteConfig:
    """Two fake hosts of 8 CPUs (the second tagged ``ssd``), one image, one private pool;
    the broker's token account is a site admin."""
    from site_agent.config import SiteConfig  # imported late: see running_site

    name, kind, cidr = POOL
    data: dict[str, Any] = {
        "site": {
            "name": SITE_NAME,
            "state_dir": state_dir,
            "database_url": f"sqlite:///{state_dir / 'site.db'}",
        },
        "hosts": [
            {"uri": "fake://host-a", "reserved_memory_mib": 0},
            {"uri": "fake://host-b", "reserved_memory_mib": 0, "tags": ["ssd"]},
        ],
        "images": [{"name": IMAGE, "disk": image}],
        "networks": [{"name": name, "type": kind, "cidr": cidr}],
        "auth": {
            "tokens": [
                {"token_hash": hash_token(TOKENS["broker"]), "account": "broker", "admin": True},
            ]
        },
        "vm": {"stop_timeout_seconds": 2},
    }
    data.update(overrides)
    return SiteConfig.model_validate(data)


@dataclass
class RealSite:
    url: str
    config: SiteConfig
    server: TestServer


@asynccontextmanager
async def running_site(config: SiteConfig) -> AsyncIterator[RealSite]:
    """The site agent app for ``config`` served on 127.0.0.1 until the block ends.

    The site agent is imported here, not at module level, so that a site agent
    being reworked breaks only the peer's cases, not the collection of the suite.
    """
    from site_agent.app import build_site_app

    server = TestServer(build_site_app(config), host="127.0.0.1")
    await server.start_server(**SERVER_LIMITS)
    try:
        yield RealSite(str(server.make_url("")).rstrip("/"), config, server)
    finally:
        await server.close()
