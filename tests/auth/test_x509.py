"""Chain verification in Python (front-proxy mode) with real grid-proxy-init proxies."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from auth.cadir import TrustStore
from auth.config import CrlPolicy
from auth.errors import CredentialRejected
from auth.x509 import (
    POLICY_INDEPENDENT,
    ChainVerifier,
    identity_from_chain,
    parse_forwarded_certificates,
    proxy_info,
)
from tests.auth.conftest import GridWorld, Proxies
from tests.auth.pki import forge_proxy, load_chain, now, pem

ALICE = "/DC=org/DC=test/O=People/CN=Alice Smith"


def verifier(ca_dir: Path, policy: CrlPolicy = CrlPolicy.STRICT, **kwargs: bool) -> ChainVerifier:
    return ChainVerifier(TrustStore.load(ca_dir), policy, **kwargs)  # type: ignore[arg-type]


def verify_file(v: ChainVerifier, path: Path):
    chain = load_chain(path)
    return v.verify(chain[0], chain[1:])


def test_rfc3820_proxy_identity_is_the_end_entity_dn(grid: GridWorld, proxies: Proxies) -> None:
    identity = verify_file(verifier(grid.ca_dir), proxies.alice)
    assert identity.dn == ALICE
    assert identity.proxy_depth == 1
    assert not identity.limited
    assert identity.end_entity.serial_number == grid.alice.cert.serial_number
    info = proxy_info(identity.chain[0])
    assert info is not None and info.policy_language == "1.3.6.1.5.5.7.21.1"


def test_proxy_of_a_proxy_is_accepted(grid: GridWorld, proxies: Proxies) -> None:
    identity = verify_file(verifier(grid.ca_dir), proxies.alice_of_proxy)
    assert identity.dn == ALICE
    assert identity.proxy_depth == 2


def test_plain_user_certificate_is_accepted(grid: GridWorld) -> None:
    v = verifier(grid.ca_dir)
    identity = v.verify(grid.alice.cert)
    assert (identity.dn, identity.proxy_depth) == (ALICE, 0)


def test_limited_proxy_refused_by_default_and_accepted_by_policy(
    grid: GridWorld, proxies: Proxies
) -> None:
    with pytest.raises(CredentialRejected, match=r"limited proxy of .*Alice Smith refused"):
        verify_file(verifier(grid.ca_dir), proxies.alice_limited)
    identity = verify_file(verifier(grid.ca_dir, accept_limited=True), proxies.alice_limited)
    assert identity.limited and identity.dn == ALICE


def test_proxies_refused_when_disabled(grid: GridWorld, proxies: Proxies) -> None:
    with pytest.raises(CredentialRejected, match=r"certificate .* rejected|proxy certificates"):
        verify_file(verifier(grid.ca_dir, accept_proxies=False), proxies.alice)


def test_expired_certificate_rejected(grid: GridWorld) -> None:
    with pytest.raises(CredentialRejected, match="Old Timer rejected: certificate has expired"):
        verifier(grid.ca_dir).verify(grid.expired.cert)


def test_certificate_from_an_untrusted_ca_rejected(grid: GridWorld) -> None:
    with pytest.raises(CredentialRejected, match="unable to get local issuer certificate"):
        verifier(grid.ca_dir).verify(grid.wrong_ca_user.cert)


def test_revoked_certificate_rejected_under_every_crl_policy(
    grid: GridWorld, proxies: Proxies
) -> None:
    with pytest.raises(CredentialRejected, match="Carol Revoked rejected: certificate revoked"):
        verify_file(verifier(grid.ca_dir), proxies.carol)
    for policy in (CrlPolicy.IF_PRESENT, CrlPolicy.BEST_EFFORT):
        with pytest.raises(CredentialRejected, match="Carol Revoked has been revoked"):
            verify_file(verifier(grid.ca_dir, policy), proxies.carol)
    # "off" does not consult CRLs at all.
    assert verify_file(verifier(grid.ca_dir, CrlPolicy.OFF), proxies.carol).dn.endswith("Revoked")


def test_missing_crl_refused_when_strict_accepted_otherwise(
    grid: GridWorld, proxies: Proxies
) -> None:
    with pytest.raises(CredentialRejected, match="unable to get certificate CRL"):
        verify_file(verifier(grid.ca_dir_no_crl), proxies.alice)
    for policy in (CrlPolicy.IF_PRESENT, CrlPolicy.BEST_EFFORT, CrlPolicy.OFF):
        assert verify_file(verifier(grid.ca_dir_no_crl, policy), proxies.alice).dn == ALICE


def test_expired_crl_policy(grid: GridWorld, proxies: Proxies) -> None:
    with pytest.raises(CredentialRejected, match="CRL has expired"):
        verify_file(verifier(grid.ca_dir_expired_crl), proxies.alice)
    with pytest.raises(CredentialRejected, match=r"the CRL of .*Test CA has expired"):
        verify_file(verifier(grid.ca_dir_expired_crl, CrlPolicy.IF_PRESENT), proxies.alice)
    best = verifier(grid.ca_dir_expired_crl, CrlPolicy.BEST_EFFORT)
    assert verify_file(best, proxies.alice).dn == ALICE
    # best-effort still honours the revocations listed in the stale CRL
    with pytest.raises(CredentialRejected, match="has been revoked"):
        verify_file(best, proxies.carol)


def test_proxy_signed_by_another_user_rejected(grid: GridWorld) -> None:
    # Bob signs a proxy claiming to extend Alice's certificate.
    forged, _key = forge_proxy(grid.bob, ALICE + "/CN=123456", issuer_name=grid.alice.cert.subject)
    with pytest.raises(CredentialRejected, match="certificate signature failure"):
        verifier(grid.ca_dir).verify(forged, [grid.alice.cert])
    # Bob signs, honestly naming himself as issuer, a proxy with Alice's subject.
    forged2, _key = forge_proxy(grid.bob, ALICE + "/CN=123456")
    with pytest.raises(CredentialRejected, match="proxy subject name violation"):
        verifier(grid.ca_dir).verify(forged2, [grid.bob.cert])


def test_independent_proxy_refused(grid: GridWorld) -> None:
    proxy, _key = forge_proxy(grid.alice, ALICE + "/CN=42", policy_oid=POLICY_INDEPENDENT)
    with pytest.raises(CredentialRejected, match="independent proxy"):
        verifier(grid.ca_dir).verify(proxy, [grid.alice.cert])


def test_expired_proxy_rejected(grid: GridWorld) -> None:
    proxy, _key = forge_proxy(
        grid.alice, ALICE + "/CN=7", not_after=now() - dt.timedelta(minutes=1)
    )
    with pytest.raises(CredentialRejected, match="certificate has expired"):
        verifier(grid.ca_dir).verify(proxy, [grid.alice.cert])


def test_identity_from_chain_needs_the_end_entity(grid: GridWorld, proxies: Proxies) -> None:
    chain = load_chain(proxies.alice)
    with pytest.raises(CredentialRejected, match="does not include the end-entity"):
        identity_from_chain(chain[:1])
    with pytest.raises(CredentialRejected, match="more than 1 proxy levels"):
        identity_from_chain(load_chain(proxies.alice_of_proxy), max_proxy_depth=1)
    with pytest.raises(CredentialRejected, match="no client certificate"):
        identity_from_chain([])


def test_forwarded_header_formats(grid: GridWorld, proxies: Proxies) -> None:
    chain = load_chain(proxies.alice)
    text = pem(chain)
    nginx = quote(text, safe="")
    apache = text.replace("\n", " ")
    for value in (nginx, apache, text):
        parsed = parse_forwarded_certificates(value)
        assert [c.serial_number for c in parsed] == [c.serial_number for c in chain]
    der_b64 = base64.b64encode(chain[0].public_bytes(Encoding.DER)).decode()
    assert parse_forwarded_certificates(der_b64)[0] == chain[0]


@pytest.mark.parametrize(
    "value",
    ["", "%20", "not a certificate", "-----BEGIN CERTIFICATE-----xx-----END CERTIFICATE-----"],
)
def test_forwarded_header_garbage_rejected(value: str) -> None:
    with pytest.raises(CredentialRejected):
        parse_forwarded_certificates(value)


def test_chain_longer_than_limit_rejected(grid: GridWorld) -> None:
    extra: list[x509.Certificate] = [grid.alice.cert] * 20
    with pytest.raises(CredentialRejected, match="chain longer than"):
        verifier(grid.ca_dir).verify(grid.alice.cert, extra)
