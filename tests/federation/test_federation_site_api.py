"""SiteApi over a handler transport (httpx.MockTransport): requests, retries, errors, signing.

The site's answers here are made by hand; the same client against a real
site agent runs in the contract suite.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from auth.delegation import SCHEME, DelegatedUser, DelegationSigner, DelegationVerifier
from auth.errors import CredentialRejected
from core.resources.images import SaveAs
from core.resources.vms import VmCreate, VmListQuery
from core.resources.volumes import DiskAttach, VolumeCreate, VolumeListQuery
from core.vm_state import VmState
from federation.errors import ProviderNotFound, SiteFailed, SiteRefused
from federation.providers.retry import RetryPolicy
from federation.providers.site_api import SiteApi
from tests.grid_world import GridWorld

FAST = RetryPolicy(attempts=3, initial_wait=0.001, max_wait=0.01)
ID = "0b6c2d6e-3f1a-4c55-9a7e-0d4f3c2b1a00"
VM: dict[str, Any] = {
    "id": ID,
    "name": "web",
    "owner": "broker",
    "image": "debian-12",
    "vcpus": 1,
    "memory_mib": 1024,
    "instance_type": "m1.small",
    "state": "pending",
    "created_at": "2024-01-01T00:00:00Z",
    "updated_at": "2024-01-01T00:00:00Z",
}
ALICE = DelegatedUser(
    account="alice",
    identity="federated:test-broker:alice",
    method="password",
    groups=frozenset({"physics"}),
)

#: A well-formed OpenSSH ed25519 public key (type, 32-byte key, comment).
SSH_KEY = (
    "ssh-ed25519 "
    + base64.b64encode(
        struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + bytes(range(32))
    ).decode()
    + " alice@example"
)

Handler = Callable[[httpx.Request], httpx.Response]


def api(handler: Handler, retry: RetryPolicy = FAST, **kwargs: Any) -> SiteApi:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    options: dict[str, Any] = {"base_url": "http://site-a.test", "token": "t0k", "retry": retry}
    options.update(kwargs)
    return SiteApi("site-a", client, **options)


def error(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"code": code, "message": message}}, headers=headers
    )


def counting(answers: list[httpx.Response], seen: list[httpx.Request]) -> Handler:
    """A handler that records requests and gives ``answers`` in order (the last one repeats)."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0) if len(answers) > 1 else answers[0]

    return handler


# --- requests --------------------------------------------------------------------------------


async def test_create_sends_the_exact_body_the_key_and_the_token() -> None:
    seen: list[httpx.Request] = []
    spec = VmCreate(image="debian-12", name="web", ssh_keys=[SSH_KEY], host_tags=["ssd"])
    (vm,) = await api(counting([httpx.Response(202, json={"vms": [VM]})], seen)).create_vm(
        spec, idempotency_key="key-1"
    )
    (request,) = seen
    assert (request.method, request.url.raw_path) == ("POST", b"/api/v1/vms")
    assert request.headers["Idempotency-Key"] == "key-1"
    assert request.headers["Authorization"] == "Bearer t0k"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {
        "image": "debian-12",
        "name": "web",
        "ssh_keys": [SSH_KEY],
        "host_tags": ["ssd"],
    }
    assert (vm.id, vm.state) == (ID, VmState.PENDING)


async def test_queries_are_encoded_and_a_wait_gets_a_longer_http_timeout() -> None:
    seen: list[httpx.Request] = []
    answers = [httpx.Response(200, json={"vms": []}), httpx.Response(200, json=VM)]
    site = api(counting(answers, seen))
    await site.list_vms(VmListQuery(all=True, include_done=False), via="test-broker")
    await site.get_vm(ID, wait="ready", timeout=5)
    assert seen[0].url.raw_path == b"/api/v1/vms?all=true&include_done=false&via=test-broker"
    assert seen[1].url.raw_path == f"/api/v1/vms/{ID}?wait=ready&timeout=5.0".encode()
    assert seen[1].extensions["timeout"]["read"] == pytest.approx(15.0)


async def test_ids_and_names_are_one_quoted_path_segment() -> None:
    seen: list[httpx.Request] = []
    site = api(counting([error(404, "not_found", "no such thing")], seen))
    with pytest.raises(ProviderNotFound):
        await site.get_vm("../admin")
    with pytest.raises(ProviderNotFound):
        await site.get_image("a/b?c")
    assert [r.url.raw_path for r in seen] == [
        b"/api/v1/vms/..%2Fadmin",
        b"/api/v1/images/a%2Fb%3Fc",
    ]


async def test_list_volumes_query_and_stop_body() -> None:
    seen: list[httpx.Request] = []
    answers = [httpx.Response(200, json={"volumes": []}), httpx.Response(202, json=VM)]
    site = api(counting(answers, seen))
    await site.list_volumes(VolumeListQuery(tag="^data", visibility="public"))
    await site.stop_vm(ID, save=SaveAs(name="kept"))
    assert seen[0].url.raw_path == b"/api/v1/volumes?tag=%5Edata&visibility=public"
    assert json.loads(seen[1].content) == {"save": {"name": "kept"}}


# --- retries -----------------------------------------------------------------------------------


async def test_create_with_a_key_is_retried_on_5xx_with_the_same_key() -> None:
    seen: list[httpx.Request] = []
    answers = [
        error(503, "unavailable", "busy"),
        error(500, "internal_error", "oops"),
        httpx.Response(202, json={"vms": [VM]}),
    ]
    vms = await api(counting(answers, seen)).create_vm(
        VmCreate(image="debian-12"), idempotency_key="key-1"
    )
    assert [vm.id for vm in vms] == [ID]
    assert [r.headers["Idempotency-Key"] for r in seen] == ["key-1"] * 3
    assert len({r.content for r in seen}) == 1


async def test_a_site_answering_500_is_retried_then_failed() -> None:
    seen: list[httpx.Request] = []
    with pytest.raises(SiteFailed) as info:
        await api(counting([error(500, "internal_error", "database is locked")], seen)).get_vm(ID)
    assert len(seen) == FAST.attempts
    assert "HTTP 500" in info.value.reason and "database is locked" in info.value.reason
    assert f"after {FAST.attempts} attempts" in info.value.reason


async def test_throttling_429_is_retried_honouring_retry_after_then_failed() -> None:
    seen: list[httpx.Request] = []
    answer = error(429, "too_many_requests", "slow down", **{"Retry-After": "0"})
    with pytest.raises(SiteFailed) as info:
        await api(counting([answer], seen)).list_vms()
    assert len(seen) == FAST.attempts
    assert "throttled (429)" in info.value.reason


async def test_connect_errors_are_retried_then_failed_and_timeouts_fail() -> None:
    calls = 0

    def refused(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(SiteFailed, match="unreachable"):
        await api(refused).list_images()
    assert calls == FAST.attempts

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(SiteFailed, match="timeout"):
        await api(slow).kill_vm(ID)


@pytest.mark.parametrize("what", ["stop", "reboot", "attach", "create without key"])
async def test_requests_that_are_not_idempotent_are_sent_once(what: str) -> None:
    seen: list[httpx.Request] = []
    site = api(counting([error(503, "unavailable", "busy")], seen))
    calls = {
        "stop": lambda: site.stop_vm(ID),
        "reboot": lambda: site.reboot_vm(ID),
        "attach": lambda: site.attach_disk(ID, DiskAttach(static_disk="tiny")),
        "create without key": lambda: site.create_volume(VolumeCreate(size_gib=1)),
    }
    with pytest.raises(SiteFailed):
        await calls[what]()
    assert len(seen) == 1


# --- errors, mapped once ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [(409, "no_capacity"), (403, "quota_exceeded"), (422, "validation_failed"), (400, "bad")],
)
async def test_4xx_is_a_refusal_keeping_status_and_code(status: int, code: str) -> None:
    seen: list[httpx.Request] = []
    site = api(counting([error(status, code, "the site says no")], seen))
    with pytest.raises(SiteRefused) as info:
        await site.create_vm(VmCreate(image="debian-12"), idempotency_key="k")
    assert (info.value.status, info.value.code) == (status, code)
    assert "the site says no" in info.value.reason
    assert len(seen) == 1


async def test_404_is_not_found_and_401_a_failure_not_a_refusal() -> None:
    with pytest.raises(ProviderNotFound, match="no such VM"):
        await api(lambda r: error(404, "not_found", "no such VM")).get_vm(ID)
    with pytest.raises(SiteFailed, match="rejected the broker's credentials: bad token"):
        await api(lambda r: error(401, "unauthorized", "bad token")).list_vms()


async def test_malformed_answers_are_failures() -> None:
    with pytest.raises(SiteFailed, match="not JSON"):
        await api(lambda r: httpx.Response(200, text="<html>")).get_vm(ID)
    with pytest.raises(SiteFailed, match="malformed answer to GET /vms: vms"):
        await api(lambda r: httpx.Response(200, json={"ok": True})).list_vms()
    with pytest.raises(SiteFailed, match="no VM in the answer"):
        await api(lambda r: httpx.Response(202, json={"vms": []})).create_vm(
            VmCreate(image="x"), idempotency_key="k"
        )


async def test_an_unknown_state_reads_unknown_instead_of_breaking_the_listing() -> None:
    listing = {"vms": [VM, {**VM, "id": "b", "state": "hibernating"}]}
    vms = await api(lambda r: httpx.Response(200, json=listing)).list_vms()
    assert [vm.state for vm in vms] == [VmState.PENDING, VmState.UNKNOWN]


async def test_health() -> None:
    answer = httpx.Response(200, json={"status": "ok", "site": "site-a", "version": "1.0"})
    assert (await api(lambda r: answer).health()).site == "site-a"


# --- acting for a user: delegation ---------------------------------------------------------------


def signer(grid: GridWorld) -> DelegationSigner:
    return DelegationSigner(broker="test-broker", chain=[grid.server.cert], key=grid.server.key)


def verifier(grid: GridWorld) -> DelegationVerifier:
    return DelegationVerifier.for_site(
        site="site-a", ca=grid.ca_dir, broker_url="https://127.0.0.1:8450", broker_dn=None
    )


async def test_a_user_request_is_signed_over_what_is_sent_afresh_for_every_attempt(
    grid: GridWorld,
) -> None:
    """Each attempt carries its own assertion, valid for exactly the request the site sees."""
    check = verifier(grid)
    users: list[DelegatedUser] = []
    answers = [error(503, "unavailable", "busy"), httpx.Response(202, json={"vms": [VM]})]

    def site(request: httpx.Request) -> httpx.Response:
        scheme, _, assertion = request.headers["Authorization"].partition(" ")
        assert scheme == SCHEME
        # The verifier remembers every jti: a replayed assertion would be refused here.
        users.append(
            check.verify(
                assertion,
                method=request.method,
                target=request.url.raw_path.decode(),
                body=request.content,
            )
        )
        return answers.pop(0)

    base = api(site, signer=signer(grid))
    alice = base.as_user(ALICE)
    assert (alice.user, base.user) == (ALICE, None)
    spec = VmCreate(image="debian-12", name="web")
    await alice.create_vm(spec, idempotency_key="k")
    assert users == [ALICE, ALICE]


async def test_the_assertion_binds_the_query(grid: GridWorld) -> None:
    check = verifier(grid)
    headers: list[httpx.Request] = []
    site = api(counting([httpx.Response(200, json=VM)], headers), signer=signer(grid))
    await site.as_user(ALICE).get_vm(ID, wait="running", timeout=3)
    (request,) = headers
    assertion = request.headers["Authorization"].partition(" ")[2]
    with pytest.raises(CredentialRejected, match="another path or query"):
        check.verify(assertion, method="GET", target=f"/api/v1/vms/{ID}", body=b"")
    user = check.verify(
        assertion, method="GET", target=request.url.raw_path.decode(), body=request.content
    )
    assert user == ALICE


async def test_without_a_signer_there_is_no_acting_for_a_user() -> None:
    site = api(lambda r: httpx.Response(200, json={"vms": []}))
    assert not site.can_delegate
    with pytest.raises(ValueError, match="delegation signer"):
        site.as_user(ALICE)
    seen: list[httpx.Request] = []
    await api(counting([httpx.Response(200, json={"vms": []})], seen)).as_user(None).list_vms()
    assert seen[0].headers["Authorization"] == "Bearer t0k"
