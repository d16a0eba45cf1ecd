"""Delegated logins at a "site" Authenticator: the broker's user, in the site's own accounts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from auth.accounts import AccountCreate, AccountStore, IdentityCreate, IdentityKind
from auth.authenticator import Authenticator, Credentials, X509Settings
from auth.cadir import TrustStore
from auth.config import CrlPolicy, OidcConfig, OidcIssuerConfig, RegistrationConfig
from auth.delegation import DelegatedUser, DelegationVerifier
from auth.errors import AccessDenied, CredentialRejected, HeaderTooLarge
from auth.oidc import MemoryIssuerSource, OidcVerifier
from auth.principal import Role
from auth.tls import PeerCertificates
from auth.tokens import TokenAuthenticator, TokenEntry, hash_token
from tests.auth.conftest import VO, GridWorld, Proxies
from tests.auth.fedworld import ALICE, ALICE_DN, BROKER, BROKER_URL, SITE, FedWorld
from tests.auth.issuer import TestIssuer, rsa_key
from tests.auth.pki import load_chain

IDP = "https://idp.example.org"
TARGET = "/api/v1/vms?wait=ready"
BODY = b'{"name": "web", "image": "debian"}'

Factory = Callable[..., Authenticator]


@pytest.fixture
def idp() -> TestIssuer:
    return TestIssuer(keys=[rsa_key("k1")], url=IDP)


@pytest.fixture
async def site(
    grid: GridWorld, fed: FedWorld, store: AccountStore, idp: TestIssuer
) -> AsyncIterator[Factory]:
    """Makes the authenticator of a site that trusts the test broker (and the grid CA)."""
    built: list[Authenticator] = []

    def factory(*, delegation: bool = True, **kwargs: Any) -> Authenticator:
        source = MemoryIssuerSource()
        source.set_jwks(IDP, {"keys": [k.jwk() for k in idp.keys]})
        verifier = DelegationVerifier.for_site(
            site=SITE, ca=fed.ca_dir, broker_url=BROKER_URL, broker_dn=None
        )
        authenticator = Authenticator(
            accounts=store,
            tokens=TokenAuthenticator([TokenEntry(hash_token("site-admin-token"), "ops", True)]),
            x509_settings=X509Settings(TrustStore.load(grid.ca_dir), CrlPolicy.STRICT),
            oidc=OidcVerifier(
                OidcConfig(issuers=[OidcIssuerConfig(issuer=IDP, audience=["stratus"])]), source
            ),
            delegation=verifier if delegation else None,
            **kwargs,
        )
        built.append(authenticator)
        return authenticator

    yield factory
    for authenticator in built:
        await authenticator.aclose()


def delegated(
    fed: FedWorld,
    user: DelegatedUser = ALICE,
    *,
    method: str = "POST",
    target: str = TARGET,
    body: bytes = BODY,
    **credentials: Any,
) -> Credentials:
    header = fed.signer().authorization(
        user, audience=SITE, method=method, target=target, body=body
    )
    return Credentials(
        headers={"Authorization": header},
        method=method,
        target=target,
        body=body,
        **credentials,
    )


def peer_of(path: Any) -> PeerCertificates:
    ders = [c.public_bytes(Encoding.DER) for c in load_chain(path)]
    return PeerCertificates(leaf=ders[0], chain=tuple(ders))


async def test_delegated_user_logs_in_with_groups_fqans_and_via(
    site: Factory, fed: FedWorld, store: AccountStore
) -> None:
    principal = await site().authenticate(delegated(fed))
    assert (principal.account, principal.identity) == ("alice-smith", ALICE_DN)
    assert (principal.method, principal.via) == ("delegated", BROKER)
    assert principal.groups == {"testvo", "testvo/analysis"}
    assert principal.fqans == ALICE.fqans
    assert principal.roles == {Role.USER}
    account = store.get_account("alice-smith")
    assert [(i.identity, i.kind) for i in account.identities] == [(ALICE_DN, IdentityKind.X509)]
    assert account.display_name == "Alice Smith"


async def test_the_same_dn_logging_in_directly_is_the_same_account(
    site: Factory, fed: FedWorld, proxies: Proxies, store: AccountStore
) -> None:
    authenticator = site()
    via_broker = await authenticator.authenticate(delegated(fed))
    direct = await authenticator.authenticate(Credentials(peer=peer_of(proxies.alice)))
    assert direct.account == via_broker.account == "alice-smith"
    assert (direct.method, direct.via) == ("x509", None)
    assert store.count_accounts() == 1


async def test_direct_login_first_then_through_the_broker(
    site: Factory, fed: FedWorld, proxies: Proxies, store: AccountStore
) -> None:
    authenticator = site()
    direct = await authenticator.authenticate(Credentials(peer=peer_of(proxies.bob)))
    bob = DelegatedUser("bob-at-broker", direct.identity, "x509", frozenset({VO}))
    via_broker = await authenticator.authenticate(delegated(fed, bob))
    assert via_broker.account == direct.account == "bob-jones"
    assert via_broker.groups == {VO}
    assert store.count_accounts() == 1


async def test_oidc_subject_is_the_same_account_as_a_direct_token(
    site: Factory, fed: FedWorld, idp: TestIssuer, store: AccountStore
) -> None:
    authenticator = site()
    jane = DelegatedUser("jane.doe", f"user-1234@{IDP}", "oidc", frozenset({"escience"}))
    via_broker = await authenticator.authenticate(delegated(fed, jane))
    assert (via_broker.account, via_broker.via) == ("jane.doe", BROKER)
    direct = await authenticator.authenticate(
        Credentials(headers={"Authorization": f"Bearer {idp.token()}"})
    )
    assert direct.account == "jane.doe" and direct.via is None
    account = store.get_account("jane.doe")
    assert [(i.identity, i.kind) for i in account.identities] == [
        (f"user-1234@{IDP}", IdentityKind.OIDC)
    ]


async def test_a_brokers_local_user_gets_a_federated_identity(
    site: Factory, fed: FedWorld, store: AccountStore
) -> None:
    authenticator = site()
    carol = DelegatedUser("carol", f"federated:{BROKER}:carol", "token", frozenset({"team"}))
    principal = await authenticator.authenticate(delegated(fed, carol))
    assert (principal.account, principal.identity, principal.via) == (
        "carol",
        f"federated:{BROKER}:carol",
        BROKER,
    )
    account = store.get_account("carol")
    assert [i.kind for i in account.identities] == [IdentityKind.FEDERATED]
    # A site account "carol" of someone else is never taken over: a new name is made.
    store.create_account(AccountCreate(name="dave"))
    other = DelegatedUser("dave", f"federated:{BROKER}:dave", "password")
    assert (await authenticator.authenticate(delegated(fed, other))).account == "dave-2"


async def test_registration_policy_applies_to_delegated_users(
    site: Factory, fed: FedWorld, store: AccountStore
) -> None:
    no_federated = site(registration=RegistrationConfig(methods=["x509", "oidc"]))
    carol = DelegatedUser("carol", f"federated:{BROKER}:carol", "password")
    with pytest.raises(AccessDenied, match=f"federated:{BROKER}:carol has no account"):
        await no_federated.authenticate(delegated(fed, carol))
    needs_vo = site(registration=RegistrationConfig(require_groups=["othervo"]))
    with pytest.raises(AccessDenied, match="not allowed to register"):
        await needs_vo.authenticate(delegated(fed))
    assert store.count_accounts() == 0
    # An admin links the identity: the user gets in.
    store.create_account(AccountCreate(name="carol"))
    store.link_identity(
        "carol",
        IdentityCreate(identity=f"federated:{BROKER}:carol", kind=IdentityKind.FEDERATED),
    )
    no_federated.forget()
    assert (await no_federated.authenticate(delegated(fed, carol))).account == "carol"


async def test_roles_are_the_site_accounts_own(
    site: Factory, fed: FedWorld, store: AccountStore
) -> None:
    authenticator = site(principal_cache_seconds=0)
    plain = await authenticator.authenticate(delegated(fed))
    assert not plain.is_admin
    store.create_account(AccountCreate(name="siteadmin", role=Role.SITE_ADMIN))
    store.link_identity(
        "siteadmin", IdentityCreate(identity="/DC=org/CN=Site Admin", kind=IdentityKind.X509)
    )
    admin = DelegatedUser("root", "/DC=org/CN=Site Admin", "x509")
    assert (await authenticator.authenticate(delegated(fed, admin))).is_admin
    store.set_enabled("alice-smith", False)
    with pytest.raises(AccessDenied, match="account alice-smith is disabled"):
        await authenticator.authenticate(delegated(fed))


async def test_a_site_without_a_verifier_refuses_delegation(
    site: Factory, fed: FedWorld, store: AccountStore
) -> None:
    authenticator = site(delegation=False)
    assert not authenticator.accepts_delegation
    with pytest.raises(CredentialRejected, match=r"^this service does not accept delegated"):
        await authenticator.authenticate(delegated(fed))
    assert store.count_accounts() == 0


async def test_refusals_create_nothing_and_name_the_reason(
    site: Factory, fed: FedWorld, store: AccountStore
) -> None:
    authenticator = site()
    with pytest.raises(CredentialRejected, match="body does not match"):
        credentials = delegated(fed)
        await authenticator.authenticate(
            Credentials(headers=credentials.headers, method="POST", target=TARGET, body=b"{}")
        )
    with pytest.raises(CredentialRejected, match="is for site 'site-a', not for 'site-b'"):
        other_site = site()
        other_site._delegation = DelegationVerifier.for_site(  # the same broker, site-b
            site="site-b", ca=fed.ca_dir, broker_url=BROKER_URL, broker_dn=None
        )
        await other_site.authenticate(delegated(fed))
    with pytest.raises(CredentialRejected, match="empty Stratus-Delegation credential"):
        await authenticator.authenticate(
            Credentials(headers={"Authorization": "Stratus-Delegation  "})
        )
    with pytest.raises(HeaderTooLarge):
        await authenticator.authenticate(
            Credentials(headers={"Authorization": "Stratus-Delegation " + "a" * 20_000})
        )
    assert store.count_accounts() == 0


async def test_no_principal_cache_for_one_use_assertions(site: Factory, fed: FedWorld) -> None:
    authenticator = site()
    credentials = delegated(fed)
    await authenticator.authenticate(credentials)
    with pytest.raises(CredentialRejected, match="replayed"):
        await authenticator.authenticate(credentials)
    assert len(authenticator._principals) == 0


async def test_delegation_decides_before_the_connections_certificate(
    site: Factory, fed: FedWorld, proxies: Proxies
) -> None:
    # The broker may connect with a client certificate of its own (here: bob's proxy);
    # the Stratus-Delegation header says for whom it acts.
    principal = await site().authenticate(delegated(fed, peer=peer_of(proxies.bob)))
    assert (principal.identity, principal.via) == (ALICE_DN, BROKER)


async def test_scheme_name_is_case_insensitive(site: Factory, fed: FedWorld) -> None:
    credentials = delegated(fed)
    value = credentials.headers["Authorization"].replace("Stratus-Delegation", "stratus-delegation")
    principal = await site().authenticate(
        Credentials(headers={"Authorization": value}, method="POST", target=TARGET, body=BODY)
    )
    assert principal.via == BROKER


def test_a_verifier_needs_an_account_store(fed: FedWorld) -> None:
    verifier = DelegationVerifier.for_site(
        site=SITE, ca=fed.ca_dir, broker_url=BROKER_URL, broker_dn=None
    )
    with pytest.raises(ValueError, match="delegated logins need an account store"):
        Authenticator(delegation=verifier)
