"""Delegated requests through the aiohttp auth middleware, signed as an httpx client sends them."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from auth.accounts import AccountStore
from auth.authenticator import Authenticator
from auth.credentials import request_target
from auth.delegation import DelegatedUser, DelegationSigner, DelegationVerifier
from auth.middleware import auth_middleware, install_authenticator, principal_of
from core.app import RouteSpec, make_app
from tests.auth.conftest import ROUTES, Starter
from tests.auth.fedworld import ALICE, BROKER, BROKER_URL, SITE, FedWorld

MAX_BODY = 4096


async def echo(request: web.Request) -> web.Response:
    """What the handler sees after the middleware read the body for the assertion."""
    caller = principal_of(request)
    body = await request.read()
    data = await request.json()
    return web.json_response(
        {
            "account": caller.account,
            "via": caller.via,
            "method": caller.method,
            "groups": sorted(caller.groups),
            "sha256": hashlib.sha256(body).hexdigest(),
            "name": data.get("name"),
            "query": dict(request.query),
        }
    )


def app_for(authenticator: Authenticator) -> web.Application:
    routes = [*ROUTES, RouteSpec("POST", "/echo", echo, "echo the caller and the body")]
    app = make_app(
        routes,
        title="delegation test service",
        middlewares=[auth_middleware(authenticator)],
        client_max_size=MAX_BODY,
    )
    install_authenticator(app, authenticator)
    return app


@pytest.fixture
async def service(serve: Starter, fed: FedWorld, store: AccountStore) -> AsyncIterator[str]:
    verifier = DelegationVerifier.for_site(
        site=SITE, ca=fed.ca_dir, broker_url=BROKER_URL, broker_dn=None
    )
    yield await serve(app_for(Authenticator(accounts=store, delegation=verifier)), None)


class Broker:
    """A minimal site client: signs each request exactly as it goes on the wire."""

    def __init__(self, signer: DelegationSigner, base: str) -> None:
        self.signer = signer
        self.client = httpx.AsyncClient(base_url=base)

    def request(
        self,
        method: str,
        path: str,
        *,
        user: DelegatedUser = ALICE,
        signed_body: bytes | None = None,
        **kwargs: object,
    ) -> httpx.Request:
        request = self.client.build_request(method, path, **kwargs)  # type: ignore[arg-type]
        request.headers["Authorization"] = self.signer.authorization(
            user,
            audience=SITE,
            method=request.method,
            target=request.url.raw_path.decode("ascii"),
            body=request.content if signed_body is None else signed_body,
        )
        return request

    async def send(self, request: httpx.Request) -> httpx.Response:
        return await self.client.send(request)


@pytest.fixture
async def broker(fed: FedWorld, service: str) -> AsyncIterator[Broker]:
    b = Broker(fed.signer(), service)
    yield b
    await b.client.aclose()


def refused(response: httpx.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert reason in error["message"], error
    if status == 401:
        assert "WWW-Authenticate" in response.headers


async def test_delegated_post_with_a_body(broker: Broker, store: AccountStore) -> None:
    payload = b'{"name": "web-1", "image": "debian"}'
    request = broker.request(
        "POST", "/api/v1/echo?wait=ready&timeout=5", content=payload, headers={"X": "y"}
    )
    response = await broker.send(request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["account"], body["via"], body["method"]) == ("alice-smith", BROKER, "delegated")
    assert body["groups"] == ["testvo", "testvo/analysis"]
    assert body["sha256"] == hashlib.sha256(payload).hexdigest()
    assert (body["name"], body["query"]) == ("web-1", {"wait": "ready", "timeout": "5"})
    assert store.get_account("alice-smith").name == "alice-smith"


async def test_body_hash_mismatch_is_refused(broker: Broker, store: AccountStore) -> None:
    request = broker.request(
        "POST",
        "/api/v1/echo",
        content=b'{"name": "evil"}',
        signed_body=b'{"name": "web-1"}',
    )
    refused(await broker.send(request), 401, "body does not match the assertion's body hash")
    assert store.count_accounts() == 0


async def test_an_encoded_query_is_bound_exactly_as_sent(broker: Broker) -> None:
    # yarl would turn %2F into / and %7E into ~ in path_qs: the middleware binds raw_path.
    request = broker.request("GET", "/api/v1/whoami?name=a%2Fb&tilde=%7E&space=a%20b")
    assert request.url.raw_path == b"/api/v1/whoami?name=a%2Fb&tilde=%7E&space=a%20b"
    response = await broker.send(request)
    assert response.status_code == 200, response.text
    assert response.json()["account"] == "alice-smith"


async def test_replay_and_another_path_are_refused(broker: Broker) -> None:
    request = broker.request("POST", "/api/v1/echo", content=b'{"name": "web-1"}')
    assert (await broker.send(request)).status_code == 200
    refused(await broker.send(request), 401, "replayed")
    moved = broker.request("GET", "/api/v1/whoami")
    moved.url = moved.url.copy_with(raw_path=b"/api/v1/admin")
    refused(await broker.send(moved), 401, "another path or query")


async def test_the_middleware_reads_the_body_within_the_apps_limit(broker: Broker) -> None:
    # /whoami never reads the body: it is the middleware that reads it, bounded.
    small = broker.request("GET", "/api/v1/whoami", content=b"x" * MAX_BODY)
    assert (await broker.send(small)).status_code == 200
    large = broker.request("GET", "/api/v1/whoami", content=b"x" * (MAX_BODY + 1))
    refused(await broker.send(large), 413, f"request body larger than {MAX_BODY} bytes")


async def test_a_service_without_a_verifier_says_so(
    serve: Starter, fed: FedWorld, store: AccountStore
) -> None:
    url = await serve(app_for(Authenticator(accounts=store, passwords=True)), None)
    broker = Broker(fed.signer(), url)
    try:
        request = broker.request("POST", "/api/v1/echo", content=b'{"name": "web-1"}')
        refused(await broker.send(request), 401, "this service does not accept delegated requests")
    finally:
        await broker.client.aclose()


def test_request_target_is_the_request_line() -> None:
    plain = make_mocked_request("GET", "/api/v1/vms/a%7Eb?x=%2F&y=a+b")
    assert request_target(plain) == "/api/v1/vms/a%7Eb?x=%2F&y=a+b"
    assert plain.path_qs != request_target(plain)  # what yarl would have made of it
    absolute = make_mocked_request("GET", "http://site.example.org/api/v1/vms?all=true")
    assert request_target(absolute) == "/api/v1/vms?all=true"
