"""PeerSiteProvider over a handler transport: the contract's view of the site's answers.

What a site's VM becomes (state through SITE_STATE_MAP, site fields in
``extra``), what "missing" means for kill and delete, the federation-wide
listing, and acting for users. The same provider against a real site agent
runs in the contract suite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from auth.delegation import DelegatedUser, DelegationSigner
from core.resources.vms import VmCreate
from core.vm_state import VmState
from federation.errors import SiteRefused
from federation.providers import peer as peer_module
from federation.providers.base import Operation, VMCreateRequest
from federation.providers.peer import PeerSiteProvider
from federation.providers.retry import RetryPolicy
from federation.providers.site_api import SiteApi
from tests.grid_world import GridWorld

FAST = RetryPolicy(attempts=2, initial_wait=0.001, max_wait=0.01)
ID = "0b6c2d6e-3f1a-4c55-9a7e-0d4f3c2b1a00"
VM: dict[str, Any] = {
    "id": ID,
    "name": "web",
    "owner": "alice",
    "group": "physics",
    "image": "debian-12",
    "vcpus": 2,
    "memory_mib": 2048,
    "instance_type": None,
    "state": "running",
    "state_reason": "booted",
    "host": "qemu+ssh://hv1/system",
    "ready": True,
    "ip": "198.18.0.7",
    "network": "private",
    "address": "198.18.0.7",
    "mac": "52:54:00:12:00:07",
    "via": "test-broker",
    "created_at": "2024-01-01T00:00:00Z",
    "updated_at": "2024-01-01T00:01:00Z",
}
ALICE = DelegatedUser(account="alice", identity="federated:test-broker:alice", method="password")

Handler = Callable[[httpx.Request], httpx.Response]


def peer(handler: Handler, *, broker: str | None = None, signer: Any = None) -> PeerSiteProvider:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    api = SiteApi(
        "site-a", client, base_url="http://site-a.test", token="t", signer=signer, retry=FAST
    )
    return PeerSiteProvider("site-a", api, broker=broker)


def not_found(request: httpx.Request) -> httpx.Response:
    return httpx.Response(404, json={"error": {"code": "not_found", "message": "no such thing"}})


async def test_a_site_vm_becomes_a_provider_vm_with_the_site_fields_in_extra() -> None:
    vm = await peer(lambda r: httpx.Response(200, json=VM)).get_vm(ID)
    assert (vm.site, vm.provider_id, vm.name, vm.image) == ("site-a", ID, "web", "debian-12")
    assert (vm.state, vm.raw_state, vm.state_reason, vm.ready) == (
        VmState.RUNNING,
        "running",
        "booted",
        True,
    )
    assert (vm.vcpus, vm.memory_mib, vm.instance_type) == (2, 2048, None)
    assert vm.addresses == ("198.18.0.7",)
    assert {k: vm.extra[k] for k in ("host", "network", "address", "mac", "owner", "via")} == {
        "host": "qemu+ssh://hv1/system",
        "network": "private",
        "address": "198.18.0.7",
        "mac": "52:54:00:12:00:07",
        "owner": "alice",
        "via": "test-broker",
    }
    assert vm.extra["group"] == "physics"


@pytest.mark.parametrize(
    ("site_state", "state"),
    [("prolog", VmState.PROLOG), ("done", VmState.DONE), ("queued", VmState.UNKNOWN),
     ("expired", VmState.UNKNOWN), ("hibernating", VmState.UNKNOWN)],
)  # fmt: skip
async def test_states_go_through_the_site_table(site_state: str, state: VmState) -> None:
    """Only a site's own states count; the broker's (queued, expired) mean nothing from a site."""
    vm = await peer(lambda r: httpx.Response(200, json={**VM, "state": site_state})).get_vm(ID)
    assert vm.state is state


async def test_create_keeps_the_broker_ids_and_sends_the_key() -> None:
    keys: list[str] = []

    def site(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["Idempotency-Key"])
        return httpx.Response(202, json={"vms": [{**VM, "state": "pending"}]})

    request = VMCreateRequest("b-1", "key-1", VmCreate(image="debian-12"))
    vm = await peer(site).create_vm(request)
    assert (vm.vm_id, vm.idempotency_key, vm.state) == ("b-1", "key-1", VmState.PENDING)
    assert keys == ["key-1"]


async def test_kill_and_delete_of_something_missing_succeed() -> None:
    p = peer(not_found)
    assert await p.kill_vm(ID) is None
    await p.delete_volume(ID)


async def test_kill_returns_the_vm_as_the_site_shows_it_and_force_is_sent() -> None:
    seen: list[httpx.Request] = []

    def site(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={**VM, "state": "done", "ready": False})

    killed = await peer(site).kill_vm(ID, force=True)
    assert killed is not None and killed.state is VmState.DONE
    assert seen[0].method == "DELETE" and seen[0].url.params["force"] == "true"


async def test_other_refusals_pass_through_with_the_site_status_and_code() -> None:
    def site(request: httpx.Request) -> httpx.Response:
        body = {"error": {"code": "save_pending", "message": "a save is in progress"}}
        return httpx.Response(409, json=body)

    with pytest.raises(SiteRefused) as info:
        await peer(site).kill_vm(ID)
    assert (info.value.status, info.value.code) == (409, "save_pending")


async def test_list_leaves_done_vms_out_unless_asked() -> None:
    listing = {
        "vms": [VM, {**VM, "id": "b", "state": "done"}, {**VM, "id": "c", "state": "failed"}]
    }
    seen: list[str] = []

    def site(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.query.decode())
        return httpx.Response(200, json=listing)

    p = peer(site)
    assert [v.provider_id for v in await p.list_vms()] == [ID, "c"]
    assert [v.provider_id for v in await p.list_vms(include_done=True)] == [ID, "b", "c"]
    assert seen == ["include_done=false", ""]


async def test_the_federation_view_also_lists_what_the_broker_made_for_users() -> None:
    queries: list[str] = []

    def site(request: httpx.Request) -> httpx.Response:
        query = request.url.query.decode()
        queries.append(query)
        if "via=" in query:
            return httpx.Response(200, json={"vms": [VM, {**VM, "id": "u2"}]})
        return httpx.Response(200, json={"vms": [{**VM, "owner": "broker"}]})

    listed = await peer(site, broker="test-broker").list_vms()
    assert sorted(v.provider_id for v in listed) == sorted([ID, "u2"])
    assert queries == ["include_done=false", "all=true&include_done=false&via=test-broker"]


async def test_without_a_signer_the_peer_acts_as_the_broker_only() -> None:
    p = peer(not_found)
    assert not p.knows_users
    assert p.acting_for(ALICE) is p
    assert p.operations == frozenset(Operation)


async def test_acting_for_a_user_signs_every_request(grid: GridWorld) -> None:
    signer = DelegationSigner(broker="test-broker", chain=[grid.server.cert], key=grid.server.key)
    seen: list[httpx.Request] = []

    def site(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"vms": [VM]})

    base = peer(site, broker="test-broker", signer=signer)
    assert base.knows_users
    alice = base.acting_for(ALICE)
    assert isinstance(alice, PeerSiteProvider) and alice is not base
    assert alice.api.user == ALICE and alice.name == "site-a"
    await alice.list_vms()
    (request,) = seen  # a user's listing is theirs only: no federation-wide query
    assert request.headers["Authorization"].startswith("Stratus-Delegation ")
    assert "via=" not in request.url.query.decode()


async def test_a_wait_longer_than_the_site_holds_an_answer_takes_several(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The site holds one ?wait= answer at most MAX_WAIT seconds; the provider asks again."""
    monkeypatch.setattr(peer_module, "MAX_WAIT", 0.05)
    waits: list[str] = []
    answers = [{**VM, "state": "boot", "ready": False}] * 2 + [VM]

    def site(request: httpx.Request) -> httpx.Response:
        waits.append(request.url.params.get("wait", ""))
        return httpx.Response(200, json=answers.pop(0))

    vm = await peer(site).wait_vm(ID, "ready", 60.0)
    assert vm.ready and vm.state is VmState.RUNNING
    assert waits == ["ready", "ready", "ready"]
