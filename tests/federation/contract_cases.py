"""The providers the contract suite runs: the fake, a real peer site over HTTP, moto's cloud.

Each :class:`Case` holds the provider as the federation itself sees it,
what it needs to make a valid VM there (image, a pool), an id it does not
know, and a way to count the VMs its backend really holds (the site's own
API, moto's instances), so a test checks what was made, not what the
provider says it made.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from auth.delegation import DelegatedUser
from core.resources.vms import VmCreate
from federation.providers.base import ComputeProvider, Operation, VMCreateRequest
from federation.providers.cloud import LibcloudProvider
from federation.providers.fake import FakeProvider
from federation.providers.peer import PeerSiteProvider
from federation.providers.retry import RetryPolicy
from federation.providers.site_api import SiteApi
from tests.federation.real_site import (
    BROKER,
    IMAGE,
    POOL,
    TOKENS,
    RealSite,
    broker_signer,
    federation_section,
    make_image,
    running_site,
    site_config,
)
from tests.grid_world import GridWorld

FAST_RETRY = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.05)

#: Provider kind -> its class (what the static checks inspect). ``peer-user`` is the
#: peer acting for a user: every request signed with a delegation assertion.
CLASSES: dict[str, type[ComputeProvider]] = {
    "fake": FakeProvider,
    "peer": PeerSiteProvider,
    "peer-user": PeerSiteProvider,
    "cloud": LibcloudProvider,
}
#: The user the ``peer-user`` case acts for.
CAROL = DelegatedUser(account="carol", identity="federated:test-broker:carol", method="token")


def kinds_with(operation: Operation) -> list[str]:
    """The provider kinds that declare ``operation`` (optional-operation tests run on those)."""
    return [kind for kind, cls in CLASSES.items() if operation in cls.operations]


def kinds_without(operation: Operation) -> list[str]:
    return [kind for kind, cls in CLASSES.items() if operation not in cls.operations]


#: The kinds whose providers know users (the peer: once it has a delegation signer).
KNOWING_USERS = ["fake", "peer"]


@dataclass
class Case:
    kind: str
    provider: ComputeProvider
    image: str
    missing_id: str
    backend_live_count: Callable[[], Awaitable[int]]
    pool: tuple[str, str, str] | None = None
    site: RealSite | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def request(self, key: str | None = None, **spec: Any) -> VMCreateRequest:
        """A valid create for this provider (``spec`` overrides the body's fields)."""
        vm_id = "vm-" + uuid.uuid4().hex[:8]
        body: dict[str, Any] = {"image": self.image, "name": f"test-{vm_id}"}
        body["instance_type"] = "m1.small"
        body.update(spec)
        return VMCreateRequest(vm_id, key or uuid.uuid4().hex, VmCreate.model_validate(body))


async def _fake_case() -> AsyncIterator[Case]:
    fake = FakeProvider("fake-site", images={"debian-12"}, networks=[POOL])

    async def count() -> int:
        return len(await fake.list_vms())

    yield Case("fake", fake, "debian-12", str(uuid.uuid4()), count, pool=POOL)


async def _peer_case(tmp_path: Path, grid: GridWorld, *, as_user: bool) -> AsyncIterator[Case]:
    config = site_config(
        tmp_path / "site", make_image(tmp_path / "images"), federation=federation_section(grid)
    )
    async with running_site(config) as site, httpx.AsyncClient(timeout=20) as client:
        api = SiteApi(
            "peer-site",
            client,
            base_url=site.url,
            token=TOKENS["broker"],
            signer=broker_signer(grid),
            retry=FAST_RETRY,
        )
        peer = PeerSiteProvider("peer-site", api, broker=BROKER)

        async def count() -> int:
            # The site's own truth: every live VM, whoever owns it (admin listing).
            response = await client.get(
                site.url + "/api/v1/vms",
                params={"all": "true", "include_done": "false"},
                headers={"Authorization": f"Bearer {TOKENS['broker']}"},
            )
            assert response.status_code == 200, response.text
            return len(response.json()["vms"])

        kind, provider = ("peer-user", peer.acting_for(CAROL)) if as_user else ("peer", peer)
        yield Case(kind, provider, IMAGE, str(uuid.uuid4()), count, pool=POOL, site=site)
        await peer.aclose()


async def _cloud_case(request: pytest.FixtureRequest) -> AsyncIterator[Case]:
    endpoint = request.getfixturevalue("moto")
    config = request.getfixturevalue("cloud_config_for")(endpoint)
    cloud = LibcloudProvider(config, retry=FAST_RETRY, timeout=10, poll_interval=0.05)

    async def count() -> int:
        return len(await cloud.list_vms())

    yield Case("cloud", cloud, "debian-12", "i-0123456789abcdef0", count)
    await cloud.aclose()


@pytest.fixture
async def case(request: pytest.FixtureRequest) -> AsyncIterator[Case]:
    """The provider of kind ``request.param`` (``fake``, ``peer``, ``peer-user``, ``cloud``)."""
    kind = request.param
    if kind == "fake":
        cases = _fake_case()
    elif kind in ("peer", "peer-user"):
        tmp_path, grid = request.getfixturevalue("tmp_path"), request.getfixturevalue("grid")
        cases = _peer_case(tmp_path, grid, as_user=kind == "peer-user")
    else:
        cases = _cloud_case(request)
    async for made in cases:
        yield made
