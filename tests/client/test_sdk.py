"""The SDK's HTTP behaviour, with respx standing in for the service."""

from __future__ import annotations

import httpx
import pytest
import respx

from client.errors import ApiError, ConnectionFailed
from client.sdk import StratusClient

URL = "http://site.test"


@respx.mock
def test_create_sends_token_and_an_idempotency_key() -> None:
    route = respx.post(f"{URL}/api/v1/vms").mock(
        return_value=httpx.Response(202, json={"vms": [{"id": "v1", "state": "pending"}]})
    )
    with StratusClient(URL, token="t0k") as api:
        vms = api.create_vms({"image": "busybox"})
    assert vms == [{"id": "v1", "state": "pending"}]
    request = route.calls.last.request
    assert request.headers["Authorization"] == "Bearer t0k"
    assert len(request.headers["Idempotency-Key"]) == 36


@respx.mock
def test_given_idempotency_key_is_reused() -> None:
    route = respx.post(f"{URL}/api/v1/vms").mock(return_value=httpx.Response(202, json={"vms": []}))
    with StratusClient(URL) as api:
        api.create_vms({"image": "x"}, idempotency_key="k-1")
        api.create_vms({"image": "x"}, idempotency_key="k-1")
    assert [c.request.headers["Idempotency-Key"] for c in route.calls] == ["k-1", "k-1"]


@respx.mock
def test_json_errors_become_api_errors() -> None:
    respx.get(f"{URL}/api/v1/vms/nope").mock(
        return_value=httpx.Response(
            404, json={"error": {"code": "not_found", "message": "no VM with id 'nope'"}}
        )
    )
    with StratusClient(URL) as api, pytest.raises(ApiError) as info:
        api.get_vm("nope")
    assert (info.value.status, info.value.code, info.value.message) == (
        404,
        "not_found",
        "no VM with id 'nope'",
    )


@respx.mock
def test_non_json_errors_are_still_readable() -> None:
    respx.get(f"{URL}/api/v1/vms").mock(
        return_value=httpx.Response(502, text="<html>Bad gateway</html>")
    )
    with StratusClient(URL) as api, pytest.raises(ApiError) as info:
        api.list_vms()
    assert info.value.status == 502 and "Bad gateway" in info.value.message


@respx.mock
def test_wait_is_passed_and_the_timeout_extended() -> None:
    route = respx.get(f"{URL}/api/v1/vms/v1").mock(
        return_value=httpx.Response(200, json={"id": "v1"})
    )
    with StratusClient(URL, timeout=5) as api:
        api.get_vm("v1", wait="ready", wait_timeout=30)
    request = route.calls.last.request
    assert request.url.params["wait"] == "ready" and request.url.params["timeout"] == "30"
    assert request.extensions["timeout"]["read"] == 40


def test_unreachable_service() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with (
        StratusClient(URL, transport=httpx.MockTransport(refuse)) as api,
        pytest.raises(ConnectionFailed),
    ):
        api.health()
