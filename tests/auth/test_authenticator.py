"""The Authenticator: method order, registration policy, caches; no HTTP server needed."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.engine import Engine

from auth.accounts import (
    AccountCreate,
    AccountStore,
    IdentityCreate,
    IdentityKind,
    MembershipCreate,
)
from auth.authenticator import Authenticator, Credentials, X509Settings
from auth.cadir import TrustStore
from auth.config import (
    AuthConfig,
    CrlPolicy,
    OidcConfig,
    OidcIssuerConfig,
    RegistrationConfig,
    TrustedProxyConfig,
    VomsConfig,
    X509Config,
)
from auth.errors import AccessDenied, CredentialRejected, HeaderTooLarge, NoCredential
from auth.oidc import MemoryIssuerSource, OidcVerifier
from auth.principal import Role
from auth.tls import PeerCertificates
from auth.tokens import TokenAuthenticator, TokenEntry, hash_token
from auth.voms import VomsVerifier
from auth.x509 import ChainVerifier
from tests.auth.conftest import VO, GridWorld, Proxies
from tests.auth.issuer import TestIssuer, rsa_key
from tests.auth.pki import load_chain, pem

ALICE = "/DC=org/DC=test/O=People/CN=Alice Smith"
IDP = "https://idp.example.org"
STATIC = "static-api-token-for-ops"


def peer(path: Path, *, resumed: bool = False) -> PeerCertificates:
    ders = [c.public_bytes(Encoding.DER) for c in load_chain(path)]
    return PeerCertificates(leaf=ders[0], chain=None if resumed else (*ders,))


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def idp() -> TestIssuer:
    return TestIssuer(keys=[rsa_key("k1")], url=IDP)


Factory = Callable[..., Authenticator]


@pytest.fixture
async def make(grid: GridWorld, store: AccountStore, idp: TestIssuer) -> AsyncIterator[Factory]:
    built: list[Authenticator] = []

    def factory(
        *,
        crl_policy: CrlPolicy = CrlPolicy.STRICT,
        registration: RegistrationConfig | None = None,
        trusted_proxy: TrustedProxyConfig | None = None,
        accept_limited: bool = False,
        **kwargs: Any,
    ) -> Authenticator:
        trust = TrustStore.load(grid.ca_dir)
        source = MemoryIssuerSource()
        source.set_jwks(IDP, {"keys": [k.jwk() for k in idp.keys]})
        oidc = OidcVerifier(
            OidcConfig(issuers=[OidcIssuerConfig(issuer=IDP, audience=["stratus"])]), source
        )
        authenticator = Authenticator(
            accounts=store,
            tokens=TokenAuthenticator([TokenEntry(hash_token(STATIC), "ops", admin=True)]),
            x509_settings=X509Settings(trust, crl_policy, accept_limited=accept_limited),
            trusted_proxy=trusted_proxy,
            voms=VomsVerifier(
                VomsConfig(vomsdir=grid.vomsdir),
                ChainVerifier(trust, CrlPolicy.STRICT, accept_proxies=False),
            ),
            oidc=oidc,
            registration=registration,
            **{"passwords": True, **kwargs},
        )
        built.append(authenticator)
        return authenticator

    yield factory
    for authenticator in built:
        await authenticator.aclose()


async def test_tls_proxy_logs_in_and_registers(
    make: Factory, proxies: Proxies, store: AccountStore
) -> None:
    principal = await make().authenticate(Credentials(peer=peer(proxies.alice)))
    assert (principal.account, principal.identity, principal.method) == (
        "alice-smith",
        ALICE,
        "x509",
    )
    assert principal.roles == {Role.USER}
    account = store.get_account("alice-smith")
    assert [i.identity for i in account.identities] == [ALICE]


async def test_voms_groups_reach_the_principal(
    make: Factory, proxies: Proxies, store: AccountStore
) -> None:
    store.create_account(AccountCreate(name="alice"))
    store.link_identity("alice", IdentityCreate(identity=ALICE, kind=IdentityKind.X509))
    store.add_member("alice", MembershipCreate(group="local-team", admin=True))
    principal = await make().authenticate(Credentials(peer=peer(proxies.alice_voms_of_proxy)))
    assert principal.account == "alice"
    assert principal.groups == {VO, f"{VO}/analysis", f"{VO}/analysis/higgs", "local-team"}
    assert principal.admin_groups == {f"{VO}/analysis", "local-team"}
    assert Role.GROUP_ADMIN in principal.roles
    assert principal.fqans[0] == f"/{VO}/Role=NULL/Capability=NULL"


async def test_resumed_session_uses_what_was_verified(make: Factory, proxies: Proxies) -> None:
    authenticator = make()
    with pytest.raises(CredentialRejected, match="TLS session was resumed"):
        await authenticator.authenticate(Credentials(peer=peer(proxies.alice, resumed=True)))
    await authenticator.authenticate(Credentials(peer=peer(proxies.alice)))
    again = await authenticator.authenticate(Credentials(peer=peer(proxies.alice, resumed=True)))
    assert again.identity == ALICE


async def test_rejected_tls_credentials_create_nothing(
    make: Factory, proxies: Proxies, store: AccountStore
) -> None:
    relaxed = make(crl_policy=CrlPolicy.IF_PRESENT)  # handshake did no CRL check: done here
    with pytest.raises(CredentialRejected, match="Carol Revoked has been revoked"):
        await relaxed.authenticate(Credentials(peer=peer(proxies.carol)))
    with pytest.raises(CredentialRejected, match=r"limited proxy of .* refused by policy"):
        await make().authenticate(Credentials(peer=peer(proxies.alice_limited)))
    assert store.count_accounts() == 0
    limited_ok = await make(accept_limited=True).authenticate(
        Credentials(peer=peer(proxies.alice_limited))
    )
    assert limited_ok.identity == ALICE


async def test_registration_off_means_403_until_linked(
    make: Factory, proxies: Proxies, store: AccountStore
) -> None:
    authenticator = make(registration=RegistrationConfig(auto=False))
    with pytest.raises(AccessDenied, match=f"{ALICE} has no account on this service"):
        await authenticator.authenticate(Credentials(peer=peer(proxies.alice)))
    assert store.count_accounts() == 0
    store.create_account(AccountCreate(name="alice"))
    store.link_identity("alice", IdentityCreate(identity=ALICE, kind=IdentityKind.X509))
    authenticator.forget(ALICE)
    assert (
        await authenticator.authenticate(Credentials(peer=peer(proxies.alice)))
    ).account == "alice"


async def test_registration_requires_a_vo(
    make: Factory, proxies: Proxies, store: AccountStore
) -> None:
    authenticator = make(registration=RegistrationConfig(require_groups=[VO]))
    with pytest.raises(AccessDenied, match="not allowed to register"):
        await authenticator.authenticate(Credentials(peer=peer(proxies.alice)))
    assert store.count_accounts() == 0
    principal = await authenticator.authenticate(Credentials(peer=peer(proxies.alice_voms)))
    assert principal.account == "alice-smith"
    methods_only = make(registration=RegistrationConfig(methods=["oidc"]))
    with pytest.raises(AccessDenied):
        await methods_only.authenticate(Credentials(peer=peer(proxies.bob)))


async def test_disabled_account_is_403(
    make: Factory, proxies: Proxies, store: AccountStore
) -> None:
    authenticator = make(principal_cache_seconds=0)
    await authenticator.authenticate(Credentials(peer=peer(proxies.alice)))
    store.set_enabled("alice-smith", False)
    with pytest.raises(AccessDenied, match="account alice-smith is disabled"):
        await authenticator.authenticate(Credentials(peer=peer(proxies.alice)))


async def test_account_changes_apply_after_the_cache_ttl(
    make: Factory, proxies: Proxies, store: AccountStore
) -> None:
    now = [0.0]
    authenticator = make(principal_cache_seconds=60, clock=lambda: now[0])
    await authenticator.authenticate(Credentials(peer=peer(proxies.alice)))
    store.set_role("alice-smith", Role.SITE_ADMIN)
    assert not (await authenticator.authenticate(Credentials(peer=peer(proxies.alice)))).is_admin
    now[0] += 61
    assert (await authenticator.authenticate(Credentials(peer=peer(proxies.alice)))).is_admin


async def test_static_token_then_oidc(make: Factory, idp: TestIssuer, store: AccountStore) -> None:
    authenticator = make()
    ops = await authenticator.authenticate(
        Credentials(headers={"Authorization": f"Bearer {STATIC}"})
    )
    assert (ops.account, ops.method, ops.is_admin) == ("ops", "token", True)
    assert store.count_accounts() == 0  # static tokens need no account row
    user = await authenticator.authenticate(
        Credentials(headers={"Authorization": f"Bearer {idp.token()}"})
    )
    assert (user.account, user.identity, user.method) == ("jane.doe", f"user-1234@{IDP}", "oidc")
    assert user.groups == {"escience", "escience/cloud", "ops"}
    with pytest.raises(CredentialRejected, match=r"^unknown or revoked API token$"):
        await authenticator.authenticate(Credentials(headers={"Authorization": "Bearer nope"}))
    with pytest.raises(CredentialRejected, match="token audience is not accepted"):
        await authenticator.authenticate(
            Credentials(headers={"Authorization": f"Bearer {idp.token(aud='x', sub='other')}"})
        )
    assert store.count_accounts() == 1


async def test_basic_password_login(make: Factory, store: AccountStore) -> None:
    store.create_account(AccountCreate(name="carol", password="a long enough password"))
    authenticator = make()
    principal = await authenticator.authenticate(
        Credentials(headers=basic("carol", "a long enough password"))
    )
    assert (principal.account, principal.identity, principal.method) == (
        "carol",
        "local:carol",
        "password",
    )
    for headers in (basic("carol", "wrong password!!"), basic("nobody", "whatever at all")):
        with pytest.raises(CredentialRejected, match=r"^wrong username or password$"):
            await authenticator.authenticate(Credentials(headers=headers))
    for value in ("Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode()):
        with pytest.raises(CredentialRejected, match="malformed Basic credential"):
            await authenticator.authenticate(Credentials(headers={"Authorization": value}))
    store.set_enabled("carol", False)
    with pytest.raises(AccessDenied, match="disabled"):
        await authenticator.authenticate(
            Credentials(headers=basic("carol", "a long enough password"))
        )
    no_passwords = make(passwords=False)
    with pytest.raises(CredentialRejected, match="password login is not enabled"):
        await no_passwords.authenticate(
            Credentials(headers=basic("carol", "a long enough password"))
        )
    assert store.count_accounts() == 1


@pytest.mark.parametrize(
    ("headers", "error", "message"),
    [
        ({}, NoCredential, "authentication required: present a client certificate"),
        ({"Authorization": "Bearer " + "x" * 16385}, HeaderTooLarge, "larger than 16384 bytes"),
        (
            {"Authorization": "Negotiate abc"},
            CredentialRejected,
            "unsupported Authorization scheme",
        ),
        ({"Authorization": "Bearer "}, CredentialRejected, "empty Bearer credential"),
    ],
)
async def test_missing_or_bad_authorization(
    make: Factory,
    store: AccountStore,
    headers: dict[str, str],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        await make().authenticate(Credentials(headers=headers))
    assert store.count_accounts() == 0


async def test_trusted_proxy_headers(make: Factory, proxies: Proxies, store: AccountStore) -> None:
    authenticator = make(trusted_proxy=TrustedProxyConfig(addresses=["10.0.0.0/8"]))  # type: ignore[list-item]
    chain = load_chain(proxies.alice_voms)
    headers = {
        "X-SSL-Client-Cert": quote(pem(chain[:1]), safe=""),
        "X-SSL-Client-Chain": quote(pem(chain[1:]), safe=""),
    }
    principal = await authenticator.authenticate(Credentials(remote="10.1.2.3", headers=headers))
    assert principal.identity == ALICE and VO in principal.groups
    with pytest.raises(CredentialRejected, match="only from the trusted front proxy"):
        await authenticator.authenticate(Credentials(remote="192.0.2.7", headers=headers))
    with pytest.raises(CredentialRejected, match="only from the trusted front proxy"):
        await authenticator.authenticate(Credentials(remote=None, headers=headers))
    carol = load_chain(proxies.carol)
    revoked = {"X-SSL-Client-Cert": quote(pem(carol), safe="")}
    with pytest.raises(CredentialRejected, match="Carol Revoked rejected: certificate revoked"):
        await authenticator.authenticate(Credentials(remote="10.1.2.3", headers=revoked))
    assert [a.name for a in store.list_accounts()] == ["alice-smith"]


def test_constructor_rules(grid: GridWorld) -> None:
    with pytest.raises(ValueError, match="need an account store"):
        Authenticator(x509_settings=X509Settings(TrustStore.load(grid.ca_dir), CrlPolicy.STRICT))
    with pytest.raises(ValueError, match="trusted proxy mode needs"):
        Authenticator(trusted_proxy=TrustedProxyConfig(addresses=["127.0.0.1/32"]))  # type: ignore[list-item]
    tokens_only = Authenticator(tokens=TokenAuthenticator([]))
    assert tokens_only.server_ssl_context() is None


async def test_from_config(grid: GridWorld, engine: Engine, proxies: Proxies) -> None:
    config = AuthConfig(
        x509=X509Config(
            enabled=True,
            ca_dir=grid.ca_dir,
            server_cert=grid.server.cert_path,
            server_key=grid.server.key_path,
        ),
        voms=VomsConfig(vomsdir=grid.vomsdir),
        tokens=[{"token_hash": hash_token(STATIC), "account": "ops"}],  # type: ignore[list-item]
        passwords={"enabled": True},  # type: ignore[arg-type]
    )
    authenticator = Authenticator.from_config(config, engine=engine)
    try:
        context = authenticator.server_ssl_context()
        assert context is not None and context.verify_flags & 0x40
        principal = await authenticator.authenticate(Credentials(peer=peer(proxies.alice_voms)))
        assert principal.account == "alice-smith" and VO in principal.groups
        assert authenticator.oidc is None
        assert authenticator.accounts is not None
    finally:
        await authenticator.aclose()
