"""One contract suite, run against every ComputeProvider: fake, peer site (HTTP), libcloud (moto).

The semantics checked are those of the ``ComputeProvider`` docstring.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiohttp import web

from federation.errors import SiteRefused, VMNotFound
from federation.providers.base import ComputeProvider, VMCreateRequest, VMState
from federation.providers.cloud import LibcloudProvider
from federation.providers.fake import FakeProvider
from federation.providers.peer import PeerSiteProvider
from federation.providers.retry import RetryPolicy

FAST_RETRY = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.05)


@dataclass
class Case:
    provider: ComputeProvider
    missing_id: str
    backend_live_count: Callable[[], Awaitable[int]]


def make_request(key: str | None = None, *, image: str = "debian-12") -> VMCreateRequest:
    vm_id = "vm-" + uuid.uuid4().hex[:8]
    return VMCreateRequest(
        vm_id=vm_id,
        idempotency_key=key or uuid.uuid4().hex,
        image=image,
        name=f"test-{vm_id}",
        instance_type="m1.small",
    )


@pytest.fixture(params=["fake", "peer", "libcloud"])
async def case(
    request: pytest.FixtureRequest,
    serve: Callable[[web.Application], Awaitable[str]],
    new_fake_site: Callable[[], tuple[Any, web.Application]],
) -> AsyncIterator[Case]:
    kind = request.param
    if kind == "fake":
        fake = FakeProvider("fake-site", images={"debian-12"})

        async def fake_count() -> int:
            return len(await fake.list_vms())

        yield Case(fake, "fake-site-999", fake_count)
    elif kind == "peer":
        state, app = new_fake_site()
        url = await serve(app)
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            peer = PeerSiteProvider("peer-site", client, retry=FAST_RETRY)

            async def peer_count() -> int:
                return len(state.live())

            yield Case(peer, "vm-missing", peer_count)
            await peer.aclose()
    else:
        endpoint = request.getfixturevalue("moto")
        config = request.getfixturevalue("cloud_config_for")(endpoint)
        cloud = LibcloudProvider(config, retry=FAST_RETRY, timeout=10)

        async def cloud_count() -> int:
            return len(await cloud.list_vms())

        yield Case(cloud, "i-0123456789abcdef0", cloud_count)
        await cloud.aclose()


def test_implements_every_method_of_the_interface() -> None:
    abstract = {
        name
        for name, member in vars(ComputeProvider).items()
        if getattr(member, "__isabstractmethod__", False)
    }
    assert abstract == {"create_vm", "get_vm", "list_vms", "kill_vm"}
    for cls in (FakeProvider, PeerSiteProvider, LibcloudProvider):
        assert not inspect.isabstract(cls), cls
        for name in abstract:
            assert getattr(cls, name) is not getattr(ComputeProvider, name), (cls, name)
            assert inspect.iscoroutinefunction(getattr(cls, name)), (cls, name)


async def test_create_then_get_and_list(case: Case) -> None:
    provider = case.provider
    req = make_request()
    vm = await provider.create_vm(req)
    assert vm.site == provider.name
    assert vm.provider_id
    assert vm.state in {VMState.PENDING, VMState.PROLOG, VMState.BOOT, VMState.RUNNING}
    assert vm.vm_id == req.vm_id
    assert vm.idempotency_key == req.idempotency_key
    got = await provider.get_vm(vm.provider_id)
    assert got.provider_id == vm.provider_id
    assert got.site == provider.name
    assert got.image == "debian-12"
    listed = await provider.list_vms()
    assert [v.provider_id for v in listed] == [vm.provider_id]


async def test_create_with_same_idempotency_key_makes_one_vm(case: Case) -> None:
    req = make_request("same-key-1")
    first = await case.provider.create_vm(req)
    second = await case.provider.create_vm(req)
    assert second.provider_id == first.provider_id
    assert await case.backend_live_count() == 1


async def test_different_keys_make_different_vms(case: Case) -> None:
    a = await case.provider.create_vm(make_request())
    b = await case.provider.create_vm(make_request())
    assert a.provider_id != b.provider_id
    assert {v.provider_id for v in await case.provider.list_vms()} == {a.provider_id, b.provider_id}


async def test_kill_removes_from_listing(case: Case) -> None:
    provider = case.provider
    vm = await provider.create_vm(make_request())
    await provider.kill_vm(vm.provider_id)
    assert vm.provider_id not in {v.provider_id for v in await provider.list_vms()}
    try:
        after = await provider.get_vm(vm.provider_id)
    except VMNotFound:
        return
    assert after.state is VMState.DONE


async def test_kill_twice_and_kill_missing_succeed(case: Case) -> None:
    vm = await case.provider.create_vm(make_request())
    await case.provider.kill_vm(vm.provider_id)
    await case.provider.kill_vm(vm.provider_id)
    await case.provider.kill_vm(case.missing_id)
    assert await case.backend_live_count() == 0


async def test_get_missing_raises_not_found(case: Case) -> None:
    with pytest.raises(VMNotFound) as info:
        await case.provider.get_vm(case.missing_id)
    assert info.value.site == case.provider.name


async def test_refused_create_leaves_nothing(case: Case) -> None:
    with pytest.raises(SiteRefused) as info:
        await case.provider.create_vm(make_request(image="no-such-image"))
    assert "no-such-image" in info.value.reason
    assert await case.backend_live_count() == 0
    assert await case.provider.list_vms() == []
