"""Requests a broker makes at the site on behalf of a user (``Stratus-Delegation``).

The site trusts its broker through ``[federation]`` (the CA and the broker's
DN); the assertions are signed with the broker's real certificate and key
from the test grid PKI by ``auth.delegation.DelegationSigner``, as the
broker's site client does. The same user then logs in at the site directly
with a VOMS proxy made by the real ``voms-proxy-fake``, forwarded by a
trusted front proxy (TLS terminated in front of the site).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import ClientResponse

from auth.delegation import DelegatedUser, DelegationSigner
from site_agent.api.keys import VM_MANAGER, VOLUMES
from tests.auth.pki import load_chain, pem
from tests.grid_world import FQANS, VO, GridWorld, Proxies
from tests.helpers import free_port
from tests.site_agent.conftest import FakeSite, auth

BROKER = "test-broker"
SITE = "test-site"  # tests.site_agent.conftest.site_config


@pytest.fixture
def signer(grid: GridWorld) -> DelegationSigner:
    """The broker's signer: its certificate (grid ``server``, signed by the test CA) and key."""
    return DelegationSigner.from_files(
        broker=BROKER, cert=grid.server.cert_path, key=grid.server.key_path
    )


@pytest.fixture
def alice(grid: GridWorld) -> DelegatedUser:
    """Alice as the broker authenticated her: her DN, her VO groups and FQANs."""
    return DelegatedUser(
        account="alice-at-broker",
        identity=grid.alice.dn,
        method="x509",
        groups=frozenset({VO, f"{VO}/analysis"}),
        fqans=tuple(FQANS),
    )


def federated(grid: GridWorld) -> dict[str, Any]:
    """Site config: the broker's trust in ``[federation]``, X.509 behind a front proxy."""
    return {
        "federation": {
            # Nothing listens there: the heartbeats fail (logged), which is not under test.
            "broker_url": f"https://127.0.0.1:{free_port()}",
            "site_cert": str(grid.server.cert_path),
            "site_key": str(grid.server.key_path),
            "ca": str(grid.ca.cert_path),
            "broker_dn": grid.server.dn,
            "public_url": "http://127.0.0.1:8440",
            "interval_seconds": 3600,
        },
        "auth": {
            "x509": {
                "enabled": True,
                "ca_dir": str(grid.ca_dir),
                "crl_policy": "strict",
                "trusted_proxy": {"addresses": ["127.0.0.1/32"]},
            },
            "voms": {"vomsdir": str(grid.vomsdir)},
        },
    }


async def delegated(
    site: FakeSite,
    signer: DelegationSigner,
    user: DelegatedUser,
    method: str,
    target: str,
    body: dict[str, Any] | None = None,
    *,
    header: str | None = None,
) -> ClientResponse:
    """A request made by the broker for ``user``: the assertion is bound to exactly it."""
    data = json.dumps(body).encode() if body is not None else b""
    header = header or signer.authorization(
        user, audience=SITE, method=method, target=target, body=data
    )
    headers = {"Authorization": header}
    if body is not None:
        headers["Content-Type"] = "application/json"
    return await site.client.request(method, target, data=data or None, headers=headers)


def direct(proxy_file: Any) -> dict[str, str]:
    """Headers of a direct X.509 login through the trusted front proxy (as nginx forwards)."""
    chain = load_chain(proxy_file)
    return {
        "X-SSL-Client-Cert": quote(pem(chain[:1]), safe=""),
        "X-SSL-Client-Chain": quote(pem(chain[1:]), safe=""),
    }


async def test_a_delegated_create_records_the_real_user_who_also_sees_it_directly(
    make_site: Any,
    grid: GridWorld,
    proxies: Proxies,
    signer: DelegationSigner,
    alice: DelegatedUser,
) -> None:
    site: FakeSite = await make_site(**federated(grid))
    resp = await delegated(site, signer, alice, "GET", "/api/v1/whoami")
    assert resp.status == 200, await resp.text()
    who = await resp.json()
    assert (who["identity"], who["method"]) == (grid.alice.dn, "delegated")
    account = who["account"]  # the site's own account for her DN (registered on first use)

    resp = await delegated(site, signer, alice, "POST", "/api/v1/vms", {"image": "tiny"})
    assert resp.status == 202, await resp.text()
    [vm] = (await resp.json())["vms"]
    assert (vm["owner"], vm["via"]) == (account, BROKER)
    runtime = site.client.app[VM_MANAGER].runtime
    row = await runtime.row(vm["id"])
    assert (row.owner, row.owner_identity, row.via) == (account, grid.alice.dn, BROKER)
    assert set(row.owner_groups) == set(alice.groups) and row.owner_fqans == list(FQANS)

    resp = await delegated(site, signer, alice, "POST", "/api/v1/volumes", {"size_gib": 1})
    assert resp.status == 202, await resp.text()
    volume = await resp.json()
    assert (volume["owner"], volume["via"]) == (account, BROKER)
    stored = await site.client.app[VOLUMES].get_for(_admin(), volume["id"])
    assert (stored.owner_identity, stored.via) == (grid.alice.dn, BROKER)
    assert stored.owner_fqans == list(FQANS)

    # Alice logs in at the site herself (her VOMS proxy): the same account, her VM and volume.
    headers = direct(proxies.alice_voms)
    who_direct = await (await site.client.get("/api/v1/whoami", headers=headers)).json()
    assert (who_direct["account"], who_direct["method"]) == (account, "x509")
    mine = await (await site.client.get("/api/v1/vms", headers=headers)).json()
    assert [(v["id"], v["via"]) for v in mine["vms"]] == [(vm["id"], BROKER)]
    shown = await site.client.get(f"/api/v1/vms/{vm['id']}", headers=headers)
    assert shown.status == 200
    volumes = await (await site.client.get("/api/v1/volumes", headers=headers)).json()
    assert [v["id"] for v in volumes["volumes"]] == [volume["id"]]
    # What she makes directly has no broker.
    resp = await site.client.post("/api/v1/vms", json={"image": "tiny"}, headers=headers)
    assert resp.status == 202
    [own] = (await resp.json())["vms"]
    assert (own["owner"], own["via"]) == (account, None)
    # Bob sees none of it.
    bob = await (await site.client.get("/api/v1/vms", headers=auth("bob"))).json()
    assert bob["vms"] == []


async def test_admins_list_what_a_broker_made_with_via(
    make_site: Any, grid: GridWorld, signer: DelegationSigner, alice: DelegatedUser
) -> None:
    site: FakeSite = await make_site(**federated(grid))
    resp = await delegated(site, signer, alice, "POST", "/api/v1/vms", {"image": "tiny"})
    [made] = (await resp.json())["vms"]
    resp = await delegated(site, signer, alice, "POST", "/api/v1/volumes", {"size_gib": 1})
    made_volume = await resp.json()
    direct_vm = await site.create("bob")
    resp = await site.client.post("/api/v1/volumes", json={"size_gib": 1}, headers=auth("bob"))
    assert resp.status == 202

    every = await site.client.get("/api/v1/vms", params={"all": "true"}, headers=auth("root"))
    assert {v["id"] for v in (await every.json())["vms"]} == {made["id"], direct_vm["id"]}
    params = {"all": "true", "via": BROKER}
    swept = await site.client.get("/api/v1/vms", params=params, headers=auth("root"))
    assert [v["id"] for v in (await swept.json())["vms"]] == [made["id"]]
    other = await site.client.get(
        "/api/v1/vms", params={"all": "true", "via": "other-broker"}, headers=auth("root")
    )
    assert (await other.json())["vms"] == []
    swept = await site.client.get("/api/v1/volumes", params=params, headers=auth("root"))
    assert [v["id"] for v in (await swept.json())["volumes"]] == [made_volume["id"]]
    # A user's own list filtered by broker: bob made nothing through one.
    mine = await site.client.get("/api/v1/vms", params=params, headers=auth("bob"))
    assert (await mine.json())["vms"] == []
    bad = await site.client.get("/api/v1/vms", params={"via": "a:b"}, headers=auth("root"))
    assert bad.status == 422


async def test_a_replayed_or_altered_assertion_creates_nothing(
    make_site: Any, grid: GridWorld, signer: DelegationSigner, alice: DelegatedUser
) -> None:
    site: FakeSite = await make_site(**federated(grid))
    body = {"image": "tiny"}
    data = json.dumps(body).encode()
    header = signer.authorization(
        alice, audience=SITE, method="POST", target="/api/v1/vms", body=data
    )
    first = await delegated(site, signer, alice, "POST", "/api/v1/vms", body, header=header)
    assert first.status == 202
    replay = await delegated(site, signer, alice, "POST", "/api/v1/vms", body, header=header)
    assert replay.status == 401
    assert "replay" in (await replay.json())["error"]["message"]
    # A fresh assertion for that body, sent with another body (as a man in the middle would).
    fresh = signer.authorization(
        alice, audience=SITE, method="POST", target="/api/v1/vms", body=data
    )
    altered = await delegated(
        site, signer, alice, "POST", "/api/v1/vms", {"image": "tiny", "count": 5}, header=fresh
    )
    assert altered.status == 401
    assert "body" in (await altered.json())["error"]["message"]
    every = await site.client.get("/api/v1/vms", params={"all": "true"}, headers=auth("root"))
    assert len((await every.json())["vms"]) == 1


async def test_a_site_without_federation_refuses_delegated_requests(
    make_site: Any, signer: DelegationSigner, alice: DelegatedUser
) -> None:
    site: FakeSite = await make_site()
    resp = await delegated(site, signer, alice, "POST", "/api/v1/vms", {"image": "tiny"})
    assert resp.status == 401
    error = (await resp.json())["error"]
    assert "does not accept delegated requests" in error["message"]
    every = await site.client.get("/api/v1/vms", params={"all": "true"}, headers=auth("root"))
    assert (await every.json())["vms"] == []


def _admin() -> Any:
    from auth.principal import Principal, Role

    return Principal(
        account="root", identity="root", method="token", roles=frozenset({Role.SITE_ADMIN})
    )
