"""End to end: an HTTPS service on 127.0.0.1 with the auth middleware; httpx logs in with
real grid-proxy-init / voms-proxy-fake proxies and with tokens of a live OIDC issuer."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from sqlalchemy.engine import Engine

from auth.accounts import AccountStore
from auth.authenticator import Authenticator
from auth.config import AuthConfig, CrlPolicy
from auth.middleware import AUTHENTICATOR, auth_middleware, install_authenticator, principal_of
from auth.tokens import hash_token
from tests.auth.conftest import VO, GridWorld, Proxies, Starter, client_context, tiny_app
from tests.auth.issuer import TestIssuer, hs256_token, rsa_key, tamper, unsigned_token
from tests.auth.pki import forge_proxy, load_chain, pem, write_proxy_file

ALICE = "/DC=org/DC=test/O=People/CN=Alice Smith"
ADMIN_TOKEN = "admin-api-token-0123456789"


@pytest.fixture
async def idp(serve: Starter) -> TestIssuer:
    state = TestIssuer(keys=[rsa_key("k1")])
    state.url = await serve(state.app(), None)
    return state


def auth_config(grid: GridWorld, idp: TestIssuer | None, **x509: Any) -> AuthConfig:
    data: dict[str, Any] = {
        "x509": {
            "enabled": True,
            "ca_dir": str(grid.ca_dir),
            "server_cert": str(grid.server.cert_path),
            "server_key": str(grid.server.key_path),
            **x509,
        },
        "voms": {"vomsdir": str(grid.vomsdir)},
        "tokens": [{"token_hash": hash_token(ADMIN_TOKEN), "account": "root", "admin": True}],
    }
    if idp is not None:
        data["oidc"] = {
            "issuers": [{"issuer": idp.url, "audience": ["stratus"]}],
            "min_refresh_interval_seconds": 0.5,
        }
    return AuthConfig.model_validate(data)


@pytest.fixture
async def service(
    grid: GridWorld, idp: TestIssuer, engine: Engine, serve: Starter
) -> AsyncIterator[str]:
    """The HTTPS service; yields its base URL. Built like a real service would be."""
    authenticator = Authenticator.from_config(auth_config(grid, idp), engine=engine)
    app = tiny_app([auth_middleware(authenticator)])
    install_authenticator(app, authenticator)
    context = authenticator.server_ssl_context()
    assert context is not None
    yield await serve(app, context) + "/api/v1"


def client(grid: GridWorld, cert: Path | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(verify=client_context(grid, cert), timeout=10)


async def whoami(grid: GridWorld, url: str, cert: Path | None = None, **kw: Any) -> httpx.Response:
    async with client(grid, cert) as c:
        return await c.get(url + "/whoami", **kw)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_refused(response: httpx.Response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert (
        body["error"]["code"] == {401: "unauthorized", 403: "forbidden", 503: "unavailable"}[status]
    )
    assert message in body["error"]["message"]
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


# --- acceptance -----------------------------------------------------------------


async def test_login_with_a_grid_proxy(
    grid: GridWorld, proxies: Proxies, service: str, store: AccountStore
) -> None:
    response = await whoami(grid, service, proxies.alice)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body | {"roles": None} == {
        "account": "alice-smith",
        "identity": ALICE,
        "method": "x509",
        "groups": [],
        "admin_groups": [],
        "roles": None,
        "fqans": [],
    }
    assert [a.name for a in store.list_accounts()] == ["alice-smith"]


async def test_login_with_a_voms_proxy_of_a_proxy(
    grid: GridWorld, proxies: Proxies, service: str
) -> None:
    body = (await whoami(grid, service, proxies.alice_voms_of_proxy)).json()
    assert body["identity"] == ALICE
    assert body["groups"] == [VO, f"{VO}/analysis", f"{VO}/analysis/higgs"]
    assert body["admin_groups"] == [f"{VO}/analysis"]
    assert "group-admin" in body["roles"]


async def test_keep_alive_requests_reuse_the_verification(
    grid: GridWorld, proxies: Proxies, service: str
) -> None:
    async with client(grid, proxies.alice_voms) as c:
        bodies = [(await c.get(service + "/whoami")).json() for _ in range(5)]
    assert all(b == bodies[0] for b in bodies) and VO in bodies[0]["groups"]


async def test_login_with_an_oidc_token(
    grid: GridWorld, idp: TestIssuer, service: str, store: AccountStore
) -> None:
    response = await whoami(grid, service, headers=bearer(idp.token()))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["account"], body["method"]) == ("jane.doe", "oidc")
    assert body["identity"] == f"user-1234@{idp.url}"
    assert store.find_account(f"user-1234@{idp.url}") is not None


async def test_key_rotation_seen_without_restart(
    grid: GridWorld, idp: TestIssuer, service: str
) -> None:
    assert (await whoami(grid, service, headers=bearer(idp.token()))).status_code == 200
    await asyncio.sleep(0.6)  # past the refresh rate limit (0.5 s here, 10 s by default)
    new_key = idp.rotate()
    response = await whoami(grid, service, headers=bearer(idp.token(new_key, sub="rotated")))
    assert response.status_code == 200, response.text
    assert response.json()["identity"] == f"rotated@{idp.url}"
    assert idp.jwks_fetches == 2


async def test_public_route_needs_nothing(grid: GridWorld, service: str) -> None:
    async with client(grid) as c:
        assert (await c.get(service + "/ping")).json() == {"pong": True}
        assert (await c.get(service + "/openapi.json")).status_code == 200


async def test_admin_route(grid: GridWorld, proxies: Proxies, service: str) -> None:
    async with client(grid, proxies.alice) as c:
        assert_refused(await c.get(service + "/admin"), 403, "alice-smith is not a site admin")
    async with client(grid) as c:
        ok = await c.get(service + "/admin", headers=bearer(ADMIN_TOKEN))
        assert ok.status_code == 200 and ok.json() == {"ok": True}


# --- bad input: 401/403 with a clear message, and never an account ----------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda i: tamper(i.token(), sub="admin"), "token signature does not verify"),
        (
            lambda i: TestIssuer(keys=i.keys, url="https://evil.example.org").token(),
            "is not trusted",
        ),
        (lambda i: i.token(aud="another-service"), "token audience is not accepted"),
        (lambda i: i.token(exp=1_000_000), "token has expired"),
        (lambda i: unsigned_token(i.claims(), kid="k1"), "token algorithm 'none' is not accepted"),
        (
            lambda i: hs256_token(i.claims(), i.keys[0].public_pem(), kid="k1"),
            "token algorithm 'HS256' is not accepted",
        ),
        (lambda i: "not-a-configured-token", "unknown or revoked API token"),
    ],
    ids=[
        "tampered",
        "untrusted-issuer",
        "wrong-audience",
        "expired",
        "alg-none",
        "hs-rs-confusion",
        "unknown",
    ],
)
async def test_bad_tokens(
    grid: GridWorld, idp: TestIssuer, service: str, store: AccountStore, make: Any, message: str
) -> None:
    token = make(idp)
    assert_refused(await whoami(grid, service, headers=bearer(token)), 401, message)
    assert token not in (await whoami(grid, service, headers=bearer(token))).text
    assert store.count_accounts() == 0


async def test_no_credential(grid: GridWorld, service: str, store: AccountStore) -> None:
    assert_refused(await whoami(grid, service), 401, "authentication required")
    assert store.count_accounts() == 0


async def test_oversized_authorization_header(
    grid: GridWorld, service: str, store: AccountStore
) -> None:
    response = await whoami(grid, service, headers=bearer("x" * (16 * 1024 + 1)))
    assert_refused(response, 401, "Authorization header larger than 16384 bytes")
    assert store.count_accounts() == 0


async def test_limited_proxy_refused_with_a_message(
    grid: GridWorld, proxies: Proxies, service: str, store: AccountStore
) -> None:
    # OpenSSL accepts a limited proxy in the handshake; the policy refuses it after.
    response = await whoami(grid, service, proxies.alice_limited)
    assert_refused(response, 401, f"limited proxy of {ALICE} refused by policy")
    assert store.count_accounts() == 0


async def tls_refused(grid: GridWorld, url: str, cert: Path) -> None:
    with pytest.raises(httpx.TransportError):
        await whoami(grid, url, cert)


async def test_bad_certificates_never_get_in(
    grid: GridWorld, proxies: Proxies, service: str, store: AccountStore, tmp_path: Path
) -> None:
    await tls_refused(grid, service, grid.expired.pem_with_key(tmp_path / "expired.pem"))
    await tls_refused(grid, service, grid.wrong_ca_user.pem_with_key(tmp_path / "wrong.pem"))
    await tls_refused(grid, service, proxies.carol)  # revoked
    forged, key = forge_proxy(grid.bob, ALICE + "/CN=777", issuer_name=grid.alice.cert.subject)
    await tls_refused(
        grid, service, write_proxy_file(tmp_path / "forged", forged, key, [grid.alice.cert])
    )
    assert store.count_accounts() == 0


async def test_revoked_certificate_with_a_message_when_crls_are_checked_after_the_handshake(
    grid: GridWorld, proxies: Proxies, engine: Engine, serve: Starter, store: AccountStore
) -> None:
    config = auth_config(grid, None, crl_policy=CrlPolicy.IF_PRESENT.value)
    authenticator = Authenticator.from_config(config, engine=engine)
    url = await serve(
        tiny_app([auth_middleware(authenticator)]), authenticator.server_ssl_context()
    )
    response = await whoami(grid, url + "/api/v1", proxies.carol)
    assert_refused(response, 401, "Carol Revoked has been revoked")
    assert store.count_accounts() == 0


async def test_unreachable_issuer_is_503(
    grid: GridWorld, engine: Engine, serve: Starter, store: AccountStore
) -> None:
    with socket.socket() as sock:  # a loopback port with nobody listening
        sock.bind(("127.0.0.1", 0))
        dead = TestIssuer(keys=[rsa_key("k1")], url=f"http://127.0.0.1:{sock.getsockname()[1]}")
    authenticator = Authenticator.from_config(auth_config(grid, dead), engine=engine)
    app = tiny_app([auth_middleware(authenticator)])
    install_authenticator(app, authenticator)
    url = await serve(app, authenticator.server_ssl_context())
    assert_refused(
        await whoami(grid, url + "/api/v1", headers=bearer(dead.token())), 503, "cannot fetch"
    )
    assert store.count_accounts() == 0


# --- front proxy mode ------------------------------------------------------------------


async def test_trusted_front_proxy_headers(
    grid: GridWorld, proxies: Proxies, engine: Engine, serve: Starter, store: AccountStore
) -> None:
    trusted = {"trusted_proxy": {"addresses": ["127.0.0.1/32"]}}
    authenticator = Authenticator.from_config(auth_config(grid, None, **trusted), engine=engine)
    url = (
        await serve(tiny_app([auth_middleware(authenticator)]), None) + "/api/v1"
    )  # plain HTTP behind the proxy
    chain = load_chain(proxies.alice_voms)
    headers = {
        "X-SSL-Client-Cert": quote(pem(chain[:1]), safe=""),
        "X-SSL-Client-Chain": quote(pem(chain[1:]), safe=""),
    }
    async with httpx.AsyncClient() as c:
        response = await c.get(url + "/whoami", headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["identity"] == ALICE and VO in response.json()["groups"]
        forged, _key = forge_proxy(grid.bob, ALICE + "/CN=1", issuer_name=grid.alice.cert.subject)
        bad = {"X-SSL-Client-Cert": quote(pem([forged, grid.alice.cert]), safe="")}
        assert_refused(
            await c.get(url + "/whoami", headers=bad), 401, "certificate signature failure"
        )
        expired = {"X-SSL-Client-Cert": quote(pem([grid.expired.cert]), safe="")}
        assert_refused(
            await c.get(url + "/whoami", headers=expired), 401, "certificate has expired"
        )
        wrong = {"X-SSL-Client-Cert": quote(pem([grid.wrong_ca_user.cert]), safe="")}
        assert_refused(
            await c.get(url + "/whoami", headers=wrong), 401, "unable to get local issuer"
        )
    assert [a.name for a in store.list_accounts()] == ["alice-smith"]


async def test_front_proxy_headers_from_elsewhere_refused(
    grid: GridWorld, proxies: Proxies, engine: Engine, serve: Starter, store: AccountStore
) -> None:
    trusted = {"trusted_proxy": {"addresses": ["192.0.2.0/24"]}}
    authenticator = Authenticator.from_config(auth_config(grid, None, **trusted), engine=engine)
    url = await serve(tiny_app([auth_middleware(authenticator)]), None) + "/api/v1"
    headers = {"X-SSL-Client-Cert": quote(pem(load_chain(proxies.alice)), safe="")}
    async with httpx.AsyncClient() as c:
        response = await c.get(url + "/whoami", headers=headers)
    assert_refused(response, 401, "accepted only from the trusted front proxy")
    assert store.count_accounts() == 0


# --- plumbing ---------------------------------------------------------------------------


def test_principal_of_without_authentication_is_a_programming_error() -> None:
    request = make_mocked_request("GET", "/")
    with pytest.raises(RuntimeError, match="no authenticated principal"):
        principal_of(request)


async def test_install_closes_the_authenticator(
    grid: GridWorld, engine: Engine, idp: TestIssuer
) -> None:
    authenticator = Authenticator.from_config(auth_config(grid, idp), engine=engine)
    app = web.Application()
    install_authenticator(app, authenticator)
    assert app[AUTHENTICATOR] is authenticator
    runner = web.AppRunner(app)
    await runner.setup()
    await runner.cleanup()
    assert authenticator.oidc is not None
    with pytest.raises(RuntimeError):  # the HTTP client is closed
        await authenticator.oidc.source.discover(idp.url)
