"""OIDC token verification against a real issuer app on 127.0.0.1 (and the in-memory fake)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from auth.config import OidcConfig, OidcIssuerConfig
from auth.errors import AuthUnavailable, CredentialRejected
from auth.oidc import (
    HttpIssuerSource,
    IssuerMetadata,
    IssuerSource,
    MemoryIssuerSource,
    OidcVerifier,
    map_group_claims,
)
from tests.auth.issuer import TestIssuer, ec_key, hs256_token, rsa_key, tamper, unsigned_token


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def issuer() -> AsyncIterator[TestIssuer]:
    """A live issuer on 127.0.0.1 with one RSA key."""
    state = TestIssuer(keys=[rsa_key("k1")])
    runner = web.AppRunner(state.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    await runner.cleanup()


def config(issuer: TestIssuer, **overrides: Any) -> OidcConfig:
    issuer_fields = {"issuer": issuer.url, "audience": ["stratus"]}
    issuer_fields.update(overrides.pop("issuer_fields", {}))
    return OidcConfig(issuers=[OidcIssuerConfig(**issuer_fields)], **overrides)


@pytest.fixture
async def verifier(issuer: TestIssuer) -> AsyncIterator[OidcVerifier]:
    v = OidcVerifier(config(issuer))
    yield v
    await v.aclose()


async def test_valid_token_accepted(issuer: TestIssuer, verifier: OidcVerifier) -> None:
    identity = await verifier.verify(issuer.token())
    assert identity.identity == f"user-1234@{issuer.url}"
    assert identity.username == "Jane.Doe"
    assert identity.groups == {"escience", "escience/cloud", "ops"}
    assert (issuer.discovery_fetches, issuer.jwks_fetches) == (1, 1)


async def test_verified_tokens_are_cached(issuer: TestIssuer, verifier: OidcVerifier) -> None:
    token = issuer.token()
    first = await verifier.verify(token)
    issuer.keys = []  # even if the issuer now had no keys at all
    second = await verifier.verify(token)
    assert first.identity == second.identity
    assert issuer.jwks_fetches == 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda i: tamper(i.token(), sub="admin"), "token signature does not verify"),
        (lambda i: i.token(aud="someone-else"), "token audience is not accepted"),
        (lambda i: i.token(exp=1_000_000), "token has expired"),
        (lambda i: i.token(nbf=4_000_000_000), "token is not yet valid"),
        (lambda i: i.token(exp=None), "token lacks the 'exp' claim"),
        (lambda i: i.token(sub=None), "token lacks the 'sub' claim"),
        (lambda i: i.token(aud=None), "token lacks the 'aud' claim"),
        (lambda i: unsigned_token(i.claims(), kid="k1"), "token algorithm 'none' is not accepted"),
        (
            lambda i: hs256_token(i.claims(), i.keys[0].public_pem(), kid="k1"),
            "token algorithm 'HS256' is not accepted",
        ),
        (lambda i: i.token(headers={"kid": "nope"}), "token signing key 'nope' is unknown"),
        (lambda i: "abc.def.ghi", "bearer token is not a valid JWT"),
        (lambda i: i.token(iss=None), "token issuer (none) is not trusted"),
    ],
)
async def test_bad_tokens_rejected(
    issuer: TestIssuer, verifier: OidcVerifier, make: Any, message: str
) -> None:
    with pytest.raises(CredentialRejected, match=re.escape(message)):
        await verifier.verify(make(issuer))


async def test_untrusted_issuer_rejected_without_any_fetch(
    issuer: TestIssuer, verifier: OidcVerifier
) -> None:
    other = TestIssuer(keys=[rsa_key("k1")], url="http://127.0.0.1:9/evil")
    with pytest.raises(
        CredentialRejected, match=re.escape("token issuer 'http://127.0.0.1:9/evil' is not trusted")
    ):
        await verifier.verify(other.token())
    assert issuer.jwks_fetches == 0


async def test_rs256_token_with_an_ec_key_id_rejected(issuer: TestIssuer) -> None:
    ec256 = ec_key("e1")
    issuer.keys.append(ec256)
    v = OidcVerifier(config(issuer))
    try:
        # Right signature, but the header says RS256 while kid names an EC key.
        rsa_signed = issuer.token(issuer.keys[0], headers={"kid": "e1"})
        with pytest.raises(CredentialRejected, match="does not match the type of key 'e1'"):
            await v.verify(rsa_signed)
        assert (await v.verify(issuer.token(ec256))).subject == "user-1234"
    finally:
        await v.aclose()


async def test_es384_needs_a_p384_key(issuer: TestIssuer) -> None:
    p384 = ec_key("p384", ec.SECP384R1(), alg="ES384")
    issuer.keys = [p384]
    v = OidcVerifier(config(issuer))
    try:
        assert (await v.verify(issuer.token(p384))).subject == "user-1234"
    finally:
        await v.aclose()


async def test_algorithm_allowed_per_issuer(issuer: TestIssuer) -> None:
    v = OidcVerifier(config(issuer, issuer_fields={"algorithms": ["ES256"]}))
    try:
        with pytest.raises(CredentialRejected, match="token algorithm 'RS256' is not accepted"):
            await v.verify(issuer.token())
    finally:
        await v.aclose()


async def test_key_rotation_without_restart_and_rate_limited_refresh(issuer: TestIssuer) -> None:
    clock = Clock()
    v = OidcVerifier(config(issuer, min_refresh_interval_seconds=10), clock=clock)
    try:
        await v.verify(issuer.token())
        assert issuer.jwks_fetches == 1
        clock.now += 11
        new_key = issuer.rotate()
        # A token signed with the new key: unknown kid -> one refresh -> accepted.
        assert (
            await v.verify(issuer.token(new_key, sub="after-rotation"))
        ).subject == "after-rotation"
        assert issuer.jwks_fetches == 2
        # Unknown kids right after: refused without fetching again (rate limit).
        for _ in range(5):
            with pytest.raises(CredentialRejected, match="unknown to its issuer"):
                await v.verify(issuer.token(new_key, headers={"kid": "bogus"}))
        assert issuer.jwks_fetches == 2
        # Another rotation within the interval is only seen once the interval has passed.
        newer = issuer.rotate()
        with pytest.raises(CredentialRejected, match="unknown to its issuer"):
            await v.verify(issuer.token(newer))
        assert issuer.jwks_fetches == 2
        clock.now += 10
        assert (await v.verify(issuer.token(newer, sub="later"))).subject == "later"
        assert issuer.jwks_fetches == 3
    finally:
        await v.aclose()


async def test_concurrent_unknown_kids_cause_one_fetch(issuer: TestIssuer) -> None:
    clock = Clock()
    v = OidcVerifier(config(issuer), clock=clock)
    try:
        await v.verify(issuer.token())
        clock.now += 60
        new_key = issuer.rotate()
        tokens = [issuer.token(new_key, sub=f"user-{n}") for n in range(20)]
        results = await asyncio.gather(*(v.verify(t) for t in tokens))
        assert {r.subject for r in results} == {f"user-{n}" for n in range(20)}
        assert issuer.jwks_fetches == 2
    finally:
        await v.aclose()


async def test_jwks_refreshed_after_ttl(issuer: TestIssuer) -> None:
    clock = Clock()
    v = OidcVerifier(config(issuer, jwks_ttl_seconds=100, token_cache_seconds=0), clock=clock)
    try:
        await v.verify(issuer.token())
        clock.now += 50
        await v.verify(issuer.token(sub="b"))
        assert issuer.jwks_fetches == 1
        clock.now += 51
        await v.verify(issuer.token(sub="c"))
        assert issuer.jwks_fetches == 2
    finally:
        await v.aclose()


async def test_unreachable_issuer_is_503_not_401(issuer: TestIssuer) -> None:
    def refuse(_request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    v = OidcVerifier(config(issuer), transport=httpx.MockTransport(refuse))
    try:
        with pytest.raises(AuthUnavailable, match="cannot fetch the discovery document"):
            await v.verify(issuer.token())
        # Within the refresh interval the issuer is not hammered again.
        with pytest.raises(AuthUnavailable, match="retry later"):
            await v.verify(issuer.token())
    finally:
        await v.aclose()


async def test_cached_keys_survive_an_issuer_outage(issuer: TestIssuer) -> None:
    source = MemoryIssuerSource()
    key = rsa_key("m1")
    source.set_jwks(issuer.url, {"keys": [key.jwk()]})
    clock = Clock()
    v = OidcVerifier(config(issuer, jwks_ttl_seconds=10), source, clock=clock)
    issuer.keys = [key]
    await v.verify(issuer.token())
    source.reachable = False
    clock.now += 100
    assert (await v.verify(issuer.token(sub="still-ok"))).subject == "still-ok"


def test_symmetric_and_short_keys_in_a_jwks_are_never_used() -> None:
    from auth.oidc import _key_from_jwk

    assert _key_from_jwk({"kty": "oct", "k": "c2VjcmV0", "kid": "h"}) is None
    small = {
        "kty": "RSA",
        "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1Wl",
        "e": "AQAB",
    }
    assert _key_from_jwk(small) is None
    assert _key_from_jwk({**rsa_key().jwk(), "use": "enc"}) is None


def test_group_claim_mapping() -> None:
    cfg = OidcIssuerConfig(
        issuer="https://aai.example.org",
        audience=["stratus"],
        entitlement_namespace="urn:geant:example.org",
        admin_roles=["manager"],
        group_prefix="",
    )
    groups, admins = map_group_claims(
        {
            "eduperson_entitlement": [
                "urn:geant:example.org:group:escience:cloud:role=manager#aai.example.org",
                "urn:geant:example.org:group:atlas#aai.example.org",
                "urn:geant:other.org:group:evil#x",
                "urn:geant:example.org:group:bad name#x",
            ],
            "groups": ["/ops", "", 42, "a//b", "x" * 300],
        },
        cfg,
    )
    assert groups == {"escience", "escience/cloud", "atlas", "ops"}
    assert admins == {"escience/cloud"}
    prefixed = cfg.model_copy(update={"group_prefix": "aai:"})
    assert map_group_claims({"groups": "a/b"}, prefixed)[0] == {"aai:a", "aai:a/b"}


# --- IssuerSource contract: the real HTTP source and the in-memory fake ---------


@pytest.fixture(params=["http", "memory"])
async def source(request: pytest.FixtureRequest, issuer: TestIssuer) -> AsyncIterator[IssuerSource]:
    if request.param == "http":
        real = HttpIssuerSource()
        yield real
        await real.aclose()
        await real.aclose()
    else:
        fake = MemoryIssuerSource()
        fake.set_jwks(issuer.url, {"keys": [k.jwk() for k in issuer.keys]})
        yield fake
        await fake.aclose()


async def test_contract_discover_and_jwks(source: IssuerSource, issuer: TestIssuer) -> None:
    metadata = await source.discover(issuer.url)
    assert metadata.issuer == issuer.url
    document = await source.jwks(metadata)
    assert [k["kid"] for k in document["keys"]] == ["k1"]


async def test_contract_unknown_issuer_unavailable(
    source: IssuerSource, issuer: TestIssuer
) -> None:
    with pytest.raises(AuthUnavailable):
        await source.discover(issuer.url + "/unknown")
    with pytest.raises(AuthUnavailable):
        await source.jwks(
            IssuerMetadata(issuer=issuer.url + "/unknown", jwks_uri=issuer.url + "/nope")
        )


def test_contract_every_abstract_method_implemented() -> None:
    abstract = IssuerSource.__abstractmethods__
    assert abstract == {"discover", "jwks"}
    for cls in (HttpIssuerSource, MemoryIssuerSource):
        assert not cls.__abstractmethods__, cls


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        (lambda r: httpx.Response(500), "gave HTTP 500"),
        (lambda r: httpx.Response(200, content=b"<html>"), "is not JSON"),
        (lambda r: httpx.Response(200, json=["x"]), "is not a JSON object"),
        (lambda r: httpx.Response(200, json={"issuer": "https://other"}), "names another issuer"),
        (
            lambda r: httpx.Response(200, json={"issuer": "https://idp.example.org"}),
            "has no jwks_uri",
        ),
        (
            lambda r: httpx.Response(
                200,
                json={"issuer": "https://idp.example.org", "jwks_uri": "http://idp.example.org/k"},
            ),
            "is not an https URL",
        ),
        (lambda r: httpx.Response(302, headers={"Location": "https://elsewhere"}), "gave HTTP 302"),
    ],
)
async def test_http_source_bad_discovery(handler: Any, message: str) -> None:
    source = HttpIssuerSource(transport=httpx.MockTransport(handler))
    try:
        with pytest.raises(AuthUnavailable, match=message):
            await source.discover("https://idp.example.org")
    finally:
        await source.aclose()


async def test_http_source_bad_jwks() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=json.dumps({"nokeys": []}).encode())

    source = HttpIssuerSource(transport=httpx.MockTransport(handler))
    try:
        with pytest.raises(AuthUnavailable, match="is not a key set"):
            await source.jwks(
                IssuerMetadata("https://idp.example.org", "https://idp.example.org/k")
            )
    finally:
        await source.aclose()


def test_issuer_config_requires_https_except_loopback() -> None:
    with pytest.raises(ValueError, match="must use https"):
        OidcIssuerConfig(issuer="http://idp.example.org", audience=["x"])
    with pytest.raises(ValueError, match="audience"):
        OidcIssuerConfig(issuer="https://idp.example.org", audience=[])
    assert OidcIssuerConfig(issuer="http://127.0.0.1:8080", audience=["x"]).issuer
