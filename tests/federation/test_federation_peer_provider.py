"""PeerSiteProvider over httpx.MockTransport: request shape, retries, refusals vs failures."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from federation.errors import SiteFailed, SiteRefused, VMNotFound
from federation.providers.base import VMCreateRequest, VMState
from federation.providers.peer import PeerSiteProvider
from federation.providers.retry import RetryPolicy

FAST = RetryPolicy(attempts=3, initial_wait=0.001, max_wait=0.01)
VM = {"id": "vm-1", "state": "pending", "name": "web", "image": "debian-12", "ip": "198.18.0.7"}

Handler = Callable[[httpx.Request], httpx.Response]


def provider(handler: Handler, retry: RetryPolicy = FAST) -> PeerSiteProvider:
    client = httpx.AsyncClient(
        transport=httpx.MockTransport(handler), base_url="http://site-a.test"
    )
    return PeerSiteProvider("site-a", client, retry=retry)


def request(**kw: object) -> VMCreateRequest:
    args: dict[str, object] = {
        "vm_id": "b-1",
        "idempotency_key": "key-1",
        "image": "debian-12",
        "name": "web",
        "instance_type": "m1.small",
    }
    args.update(kw)
    return VMCreateRequest(**args)  # type: ignore[arg-type]


def error(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    body = {"error": {"code": code, "message": message}}
    return httpx.Response(status, json=body, headers=headers)


async def test_create_sends_site_api_body_and_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(202, json=VM)

    vm = await provider(handler).create_vm(request(ssh_keys=("ssh-ed25519 AAAA x",)))
    assert len(seen) == 1
    req = seen[0]
    assert req.method == "POST"
    assert req.url.path == "/api/v1/vms"
    assert req.headers["Idempotency-Key"] == "key-1"
    assert json.loads(req.content) == {
        "image": "debian-12",
        "name": "web",
        "count": 1,
        "instance_type": "m1.small",
        "ssh_keys": ["ssh-ed25519 AAAA x"],
    }
    assert vm.provider_id == "vm-1"
    assert vm.site == "site-a"
    assert vm.state is VMState.PENDING
    assert vm.addresses == ("198.18.0.7",)
    assert (vm.vm_id, vm.idempotency_key) == ("b-1", "key-1")


async def test_create_by_cpu_and_ram_and_list_body_shape() -> None:
    bodies: list[dict[str, object]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(req.content))
        return httpx.Response(202, json={"vms": [VM]})

    vm = await provider(handler).create_vm(request(instance_type=None, vcpus=2, memory_mib=2048))
    assert bodies[0]["vcpus"] == 2 and bodies[0]["memory_mib"] == 2048
    assert "instance_type" not in bodies[0]
    assert vm.provider_id == "vm-1"


async def test_create_retried_on_5xx_with_the_same_key_then_succeeds() -> None:
    keys: list[str] = []
    answers = [error(503, "unavailable", "busy"), error(500, "internal_error", "oops")]

    def handler(req: httpx.Request) -> httpx.Response:
        keys.append(req.headers["Idempotency-Key"])
        return answers.pop(0) if answers else httpx.Response(202, json=VM)

    vm = await provider(handler).create_vm(request())
    assert vm.provider_id == "vm-1"
    assert keys == ["key-1", "key-1", "key-1"]


async def test_site_answering_500_is_retried_then_failed() -> None:
    calls = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return error(500, "internal_error", "database is locked")

    with pytest.raises(SiteFailed) as info:
        await provider(handler).create_vm(request())
    assert calls == FAST.attempts
    assert "HTTP 500" in info.value.reason
    assert "database is locked" in info.value.reason
    assert f"after {FAST.attempts} attempts" in info.value.reason


async def test_throttling_429_is_retried_honouring_retry_after_then_failed() -> None:
    calls = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return error(429, "too_many_requests", "slow down", **{"Retry-After": "0"})

    with pytest.raises(SiteFailed) as info:
        await provider(handler).list_vms()
    assert calls == FAST.attempts
    assert "throttled (429)" in info.value.reason


async def test_connect_error_is_retried_then_failed() -> None:
    calls = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("connection refused", request=req)

    with pytest.raises(SiteFailed) as info:
        await provider(handler).get_vm("vm-1")
    assert calls == FAST.attempts
    assert "unreachable" in info.value.reason


async def test_timeout_is_a_failure() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=req)

    with pytest.raises(SiteFailed, match="timeout"):
        await provider(handler).kill_vm("vm-1")


async def test_non_idempotent_post_is_not_retried() -> None:
    calls = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return error(503, "unavailable", "busy")

    with pytest.raises(SiteFailed):
        await provider(handler)._send("POST", json={})
    assert calls == 1


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (409, "no_capacity", "no host has room"),
        (403, "quota_exceeded", "quota of 10 VMs reached"),
        (404, "not_found", "image debian-12 not found"),
        (422, "validation_failed", "unknown instance type"),
    ],
)
async def test_4xx_on_create_is_a_refusal_not_retried(status: int, code: str, message: str) -> None:
    calls = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return error(status, code, message)

    with pytest.raises(SiteRefused) as info:
        await provider(handler).create_vm(request())
    assert calls == 1
    assert message in info.value.reason and code in info.value.reason


async def test_401_is_a_failure_not_a_refusal() -> None:
    with pytest.raises(SiteFailed, match="credentials"):
        await provider(lambda r: error(401, "unauthorized", "bad cert")).create_vm(request())


async def test_malformed_answers_are_failures() -> None:
    with pytest.raises(SiteFailed, match="not JSON"):
        await provider(lambda r: httpx.Response(202, text="<html>")).create_vm(request())
    with pytest.raises(SiteFailed, match="no VM id"):
        await provider(lambda r: httpx.Response(202, json={"ok": True})).create_vm(request())


async def test_get_404_is_not_found_and_delete_404_succeeds() -> None:
    p = provider(lambda r: error(404, "not_found", "no such VM"))
    with pytest.raises(VMNotFound):
        await p.get_vm("vm-x")
    await p.kill_vm("vm-x")


async def test_list_hides_done_vms_and_maps_unknown_states() -> None:
    listing = {
        "vms": [
            dict(VM, id="a", state="running"),
            dict(VM, id="b", state="done"),
            dict(VM, id="c", state="weird"),
        ]
    }
    vms = await provider(lambda r: httpx.Response(200, json=listing)).list_vms()
    assert [(v.provider_id, v.state) for v in vms] == [
        ("a", VMState.RUNNING),
        ("c", VMState.UNKNOWN),
    ]


async def test_ids_are_quoted_in_paths() -> None:
    paths: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        paths.append(req.url.raw_path.decode())
        return httpx.Response(204)

    await provider(handler).kill_vm("../admin")
    assert paths == ["/api/v1/vms/..%2Fadmin"]
