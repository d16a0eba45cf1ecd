"""The broker's VM services in one process, over in-memory sites (``FakeProvider``).

The interleavings that matter are forced by calling the steps in the order
under test (the queue drain, then a kill, then the start), never by waiting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from auth.principal import Principal
from broker.config import BrokerConfig
from broker.errors import InvalidOperation, NotPlaced
from broker.runtime import Runtime
from broker.service import Broker
from broker.sites.registry import SiteRegistry
from broker.sites.store import SiteStore
from broker.vms.models import BrokerVmCreate
from broker.vms.store import VmStore
from broker.volumes.store import VolumeStore
from core.db import create_tables, make_engine
from core.resources.vms import VmShowQuery
from core.site_report import HostReport, SiteReport
from federation.placement import Placer
from federation.providers.base import ComputeProvider
from federation.providers.fake import FakeProvider

ALICE = Principal(account="alice", identity="alice-token", method="token")
BOB = Principal(account="bob", identity="bob-token", method="token")


def report(site: str, free_cpus: int) -> SiteReport:
    return SiteReport(
        site=site,
        public_url=f"http://{site}.test",
        hosts=[HostReport(name="h", free_cpus=free_cpus, free_memory_mib=8192)],
        cached_images=["tiny"],
    )


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Broker, dict[str, FakeProvider]]]:
    config = BrokerConfig.model_validate(
        {
            "broker": {"name": "b1", "state_dir": str(tmp_path)},
            "trusted_sites": [
                {"name": name, "dn": f"/CN={name}", "token": "a-token-of-the-broker"}
                for name in ("site-a", "site-b")
            ],
        }
    )
    engine = make_engine(config.database_url)
    create_tables(engine)
    fakes = {name: FakeProvider(name, images=["tiny"]) for name in ("site-a", "site-b")}

    def site(name: str, url: str, token: str) -> ComputeProvider:
        return fakes[name]

    placer = Placer(config.ranking.weights(), heartbeat_timeout=60)
    registry = SiteRegistry(config, placer, site_factory=site, clouds={})
    runtime = Runtime(
        config=config,
        registry=registry,
        placer=placer,
        policy=config.burst_policy(),
        vms=VmStore(engine),
        volumes=VolumeStore(engine),
        sites=SiteStore(engine),
    )
    broker = Broker(runtime)
    await broker.start()  # no background tasks: each test runs the steps itself
    try:
        yield broker, fakes
    finally:
        await broker.close()
        engine.dispose()


async def test_a_vm_leaving_the_queue_cannot_be_killed_half_way_and_starts_as_its_user(
    world: tuple[Broker, dict[str, FakeProvider]],
) -> None:
    broker, fakes = world
    broker.rt.registry.heartbeat("site-a", report("site-a", 1))
    [first] = await broker.creator.create(BOB, BrokerVmCreate(image="tiny", site="site-a"), None)
    assert first.site == "site-a"
    [waiting] = await broker.creator.create(
        ALICE, BrokerVmCreate(image="tiny", site="site-a", queue=True), None
    )
    assert waiting.state == "queued"
    assert await broker.queue.drain() == [], "no room yet: nothing leaves the queue"

    broker.rt.registry.heartbeat("site-a", report("site-a", 1))  # room again
    [(item, plan, user)] = await broker.queue.drain()
    assert item.id == waiting.id and user is not None and user.account == "alice"
    # Taken out of the queue, not placed yet: a kill now would race the start.
    with pytest.raises(InvalidOperation, match="leaving the queue right now"):
        await broker.operations.kill(ALICE, waiting.id, force=False)
    await broker.creator.start_queued(item, plan, user)
    started = await broker.reader.get(ALICE, waiting.id, VmShowQuery())
    assert started.site == "site-a" and started.state == "running"
    everything = await fakes["site-a"].acting_for(None).list_vms()
    made = {vm.provider_id: vm.extra["owner"] for vm in everything}
    assert made == {first.site_vm_id: "bob", started.site_vm_id: "alice"}
    killed = await broker.operations.kill(ALICE, waiting.id, force=False)
    assert killed.state == "done"


async def test_a_request_refused_half_way_leaves_nothing_anywhere(
    world: tuple[Broker, dict[str, FakeProvider]],
) -> None:
    broker, fakes = world
    broker.rt.registry.heartbeat("site-a", report("site-a", 4))
    fakes["site-a"].max_vms = 1  # the site itself refuses the second VM
    with pytest.raises(NotPlaced) as refused:
        await broker.creator.create(
            ALICE, BrokerVmCreate(image="tiny", site="site-a", count=2), "k-1"
        )
    assert refused.value.status == 409
    assert "site-a" in refused.value.details["sites"]
    left = await fakes["site-a"].acting_for(None).list_vms()
    assert left == [], "the first VM was killed again"
    assert (await broker.reader.list_vms(ALICE, every_owner=False, include_done=True)).vms == []
    # The key was forgotten with the request: the same key may be tried again.
    fakes["site-a"].max_vms = None
    made = await broker.creator.create(
        ALICE, BrokerVmCreate(image="tiny", site="site-a", count=2), "k-1"
    )
    assert [vm.site for vm in made] == ["site-a", "site-a"]
