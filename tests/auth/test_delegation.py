"""DelegationSigner and DelegationVerifier: the good assertion, and every way one is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.warnings import InsecureKeyLengthWarning

from auth.cadir import TrustStore
from auth.config import CrlPolicy
from auth.delegation import (
    SCHEME,
    DelegatedUser,
    DelegationSigner,
    DelegationVerifier,
    body_hash,
)
from auth.errors import CredentialRejected
from tests.auth.fedworld import (
    ALICE,
    ALICE_DN,
    BROKER,
    BROKER_DN,
    BROKER_URL,
    SITE,
    FedWorld,
    claims_for,
    forge,
)
from tests.auth.pki import forge_proxy

Verify = Callable[..., DelegatedUser]


def verifier(fed: FedWorld, **kwargs: Any) -> DelegationVerifier:
    options: dict[str, Any] = {
        "site": SITE,
        "ca": fed.ca_dir,
        "broker_url": BROKER_URL,
        "broker_dn": None,
        **kwargs,
    }
    return DelegationVerifier.for_site(**options)


def assertion_of(header: str) -> str:
    scheme, _, token = header.partition(" ")
    assert scheme == SCHEME
    return token


def sign(signer: DelegationSigner, user: DelegatedUser = ALICE, **request: Any) -> str:
    values: dict[str, Any] = {
        "audience": SITE,
        "method": "POST",
        "target": "/api/v1/vms?wait=ready&timeout=5",
        "body": b'{"image": "debian"}',
        **request,
    }
    return assertion_of(signer.authorization(user, **values))


def check(v: DelegationVerifier, token: str, **request: Any) -> DelegatedUser:
    values: dict[str, Any] = {
        "method": "POST",
        "target": "/api/v1/vms?wait=ready&timeout=5",
        "body": b'{"image": "debian"}',
        **request,
    }
    return v.verify(token, **values)


def refused(v: DelegationVerifier, token: str, reason: str, **request: Any) -> str:
    with pytest.raises(CredentialRejected, match=reason) as info:
        check(v, token, **request)
    message = str(info.value)
    assert message.startswith("delegated request refused: ")
    if len(token) > 20:
        assert token not in message and token[-20:] not in message  # never the assertion
    return message


# --- the good case -------------------------------------------------------------


def test_a_good_assertion_names_the_user(fed: FedWorld) -> None:
    v = verifier(fed)
    token = sign(fed.signer())
    user = check(v, token)
    assert user == ALICE
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["typ"] == "JWT"
    assert base64.b64decode(header["x5c"][0]) == fed.broker.cert.public_bytes(Encoding.DER)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["iss"], claims["aud"], claims["htm"]) == (BROKER, SITE, "POST")
    assert claims["htu"] == "/api/v1/vms?wait=ready&timeout=5"
    assert claims["exp"] - claims["iat"] == 60 and claims["nbf"] == claims["iat"]
    assert claims["bh"] == body_hash(b'{"image": "debian"}')
    assert claims["usr"]["groups"] == ["testvo", "testvo/analysis"]


def test_check_returns_the_broker_and_expiry(fed: FedWorld) -> None:
    delegation = verifier(fed).check(
        sign(fed.signer(), method="get", target="/api/v1/vms", body=b""),
        method="GET",
        target="/api/v1/vms",
        body=b"",
    )
    assert (delegation.broker, delegation.certificate_dn) == (BROKER, BROKER_DN)
    assert delegation.expires_at > time.time()


def test_ec_p256_broker_signs_es256(fed: FedWorld) -> None:
    token = sign(fed.signer(fed.broker_ec))
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    assert check(verifier(fed), token) == ALICE


def test_empty_body_is_hashed_too() -> None:
    assert body_hash(b"") == "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"


def test_ca_as_a_pem_bundle_with_its_crl(fed: FedWorld) -> None:
    v = verifier(fed, ca=fed.ca_file)
    assert check(v, sign(fed.signer())) == ALICE
    refused(v, sign(fed.signer(fed.revoked)), "has been revoked")


def test_broker_dn_replaces_the_host_check(fed: FedWorld) -> None:
    by_dn = verifier(fed, broker_dn=BROKER_DN, broker_url="https://broker.elsewhere.org")
    assert check(by_dn, sign(fed.signer())) == ALICE
    rfc4514 = verifier(fed, broker_dn="CN=127.0.0.1,DC=stratus-test,DC=org")
    assert check(rfc4514, sign(fed.signer())) == ALICE
    other = verifier(fed, broker_dn="/DC=org/DC=stratus-test/CN=broker.example.org")
    refused(other, sign(fed.signer()), r"certificate /DC=org/DC=stratus-test/CN=127.0.0.1 is not")


def test_system_trust_does_not_know_the_test_ca(fed: FedWorld) -> None:
    try:
        v = verifier(fed, ca=None)
    except FileNotFoundError:
        return  # no system CA bundle on this machine: nothing to trust at all
    refused(v, sign(fed.signer()), "the signing certificate is not trusted")


# --- bad assertions ---------------------------------------------------------------


def test_expired_not_yet_valid_and_too_long(fed: FedWorld) -> None:
    v = verifier(fed)
    past = fed.signer(clock=lambda: time.time() - 120)
    refused(v, sign(past), r"the assertion expired \d+ s ago")
    future = fed.signer(clock=lambda: time.time() + 120)
    refused(v, sign(future), "not valid yet")
    slow = fed.signer(lifetime=600)
    refused(v, sign(slow), r"lifetime \(600 s\) is longer than the 300 s this site accepts")


def test_skew_is_tolerated_within_max_skew(fed: FedWorld) -> None:
    v = verifier(fed)
    assert check(v, sign(fed.signer(clock=lambda: time.time() + 20))) == ALICE
    assert check(v, sign(fed.signer(clock=lambda: time.time() - 80))) == ALICE  # exp 20 s ago


def test_replayed_assertion_is_refused_even_when_all_else_is_right(fed: FedWorld) -> None:
    v = verifier(fed)
    token = sign(fed.signer())
    assert check(v, token) == ALICE
    refused(v, token, r"was already used \(replayed\)")
    # A new assertion for the very same request is fine: each jti is new.
    assert check(v, sign(fed.signer())) == ALICE


def test_replay_memory_lasts_until_exp_plus_skew(fed: FedWorld) -> None:
    moment = [time.time()]
    v = DelegationVerifier(
        site=SITE,
        trust=TrustStore.load(fed.ca_dir),
        crl_policy=CrlPolicy.IF_PRESENT,
        broker_host="127.0.0.1",
        clock=lambda: moment[0],
    )
    token = sign(fed.signer(clock=lambda: moment[0]))
    assert check(v, token) == ALICE
    assert len(v._seen) == 1
    moment[0] += 89  # exp (60) + skew (30) not yet passed: still a replay
    refused(v, token, "replayed")
    moment[0] += 2  # now past it: the assertion has expired and its jti is forgotten
    refused(v, token, "expired")
    assert check(v, sign(fed.signer(clock=lambda: moment[0]))) == ALICE
    assert len(v._seen) == 1


def test_for_another_site(fed: FedWorld) -> None:
    refused(verifier(fed), sign(fed.signer(), audience="site-b"), "is for site 'site-b'")


@pytest.mark.parametrize(
    ("request_change", "reason"),
    [
        ({"method": "DELETE"}, "another HTTP method than DELETE"),
        ({"target": "/api/v1/vms?wait=ready&timeout=50"}, "another path or query"),
        ({"target": "/api/v1/volumes?wait=ready&timeout=5"}, "another path or query"),
        ({"body": b'{"image": "ubuntu"}'}, "body does not match"),
        ({"body": b""}, "body does not match"),
    ],
)
def test_bound_to_the_request(fed: FedWorld, request_change: dict[str, Any], reason: str) -> None:
    refused(verifier(fed), sign(fed.signer()), reason, **request_change)


def test_method_is_compared_in_upper_case(fed: FedWorld) -> None:
    assert check(verifier(fed), sign(fed.signer(), method="post"), method="post") == ALICE


def test_signed_by_an_untrusted_ca(fed: FedWorld) -> None:
    message = refused(verifier(fed), sign(fed.signer(fed.rogue)), "is not trusted")
    assert "unable to get local issuer certificate" in message


def test_trusted_ca_but_not_the_brokers_certificate(fed: FedWorld) -> None:
    refused(
        verifier(fed),
        sign(fed.signer(fed.other_host)),
        "CN=other.example.org is not valid for the broker's host 127.0.0.1",
    )
    refused(
        verifier(fed, broker_url="https://broker.example.org:8450"),
        sign(fed.signer()),
        "is not valid for the broker's host broker.example.org",
    )


def test_revoked_and_expired_broker_certificates(fed: FedWorld) -> None:
    refused(verifier(fed), sign(fed.signer(fed.revoked)), "has been revoked")
    refused(verifier(fed), sign(fed.signer(fed.expired)), "certificate has expired")


def test_a_proxy_of_the_broker_certificate_is_refused(fed: FedWorld) -> None:
    proxy, key = forge_proxy(fed.broker, BROKER_DN + "/CN=12345")
    token = forge(claims_for(), key=key, chain=[proxy, fed.broker.cert])
    refused(
        verifier(fed), token, "proxy certificates not allowed", target="/api/v1/vms", body=b"{}"
    )


def test_signature_by_another_key_with_the_brokers_chain(fed: FedWorld) -> None:
    token = forge(claims_for(), key=fed.rogue.key, chain=[fed.broker.cert])
    refused(verifier(fed), token, "signature does not verify", target="/api/v1/vms", body=b"{}")


def test_tampered_claims_break_the_signature(fed: FedWorld) -> None:
    token = sign(fed.signer())
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["usr"]["identity"] = "/DC=org/DC=test/CN=Someone Else"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    refused(verifier(fed), f"{header}.{forged}.{signature}", "signature does not verify")


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join(
        [part(json.dumps(header).encode()), part(json.dumps(claims).encode()), part(signature)]
    )


def test_alg_none_and_hmac_with_the_public_key(fed: FedWorld) -> None:
    v = verifier(fed)
    x5c = [base64.b64encode(fed.broker.cert.public_bytes(Encoding.DER)).decode()]
    claims = claims_for(method="POST", target="/api/v1/vms", body=b"{}")
    request = {"target": "/api/v1/vms", "body": b"{}"}
    none = _unsigned({"alg": "none", "typ": "JWT", "x5c": x5c}, claims)
    refused(v, none, r"algorithm 'none' is not accepted \(RS256 or ES256 only\)", **request)
    pem = fed.broker.cert.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "x5c": x5c}
    unsigned = _unsigned(header, claims)
    mac = hmac.new(pem, unsigned.rsplit(".", 1)[0].encode(), hashlib.sha256).digest()
    hs256 = unsigned.rsplit(".", 1)[0] + "." + _unsigned({}, {}, mac).rsplit(".", 1)[1]
    refused(v, hs256, "algorithm 'HS256' is not accepted", **request)
    for alg in ("RS512", "PS256", ["RS256"]):
        token = _unsigned({"alg": alg, "typ": "JWT", "x5c": x5c}, claims, b"sig")
        refused(v, token, "is not accepted", **request)


def test_alg_must_fit_the_certificate_key(fed: FedWorld) -> None:
    token = forge(claims_for(), key=fed.broker_ec.key, chain=[fed.broker.cert], algorithm="ES256")
    refused(
        verifier(fed), token, "signed with ES256 but the key of", target="/api/v1/vms", body=b"{}"
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"usr": None}, "names no user"),
        ({"usr": {"account": "x", "method": "x509", "groups": []}}, "names no user identity"),
        (
            {"usr": {"account": "x", "identity": "", "method": "x509"}},
            "names no user identity",
        ),
        ({"usr": {"identity": ALICE_DN, "method": "x509"}}, "names no user account"),
        ({"usr": {"account": "a", "identity": ALICE_DN, "method": "delegated"}}, "never delegated"),
        ({"usr": {"account": "a", "identity": ALICE_DN}}, "login method None is not one of"),
        (
            {"usr": {"account": "root", "identity": "local:root", "method": "password"}},
            "'local:root' does not fit login method 'password'",
        ),
        (
            {"usr": {"account": "a", "identity": "federated:other-broker:a", "method": "token"}},
            "does not fit login method 'token'",
        ),
        (
            {"usr": {"account": "a", "identity": "local:root", "method": "x509"}},
            "does not fit login method 'x509'",
        ),
        (
            {"usr": {"account": "a", "identity": "federated:test-broker:a", "method": "oidc"}},
            "does not fit login method 'oidc'",
        ),
        (
            {"usr": {"account": "a", "identity": ALICE_DN, "method": "x509", "groups": "vo"}},
            "groups are not a list",
        ),
        (
            {"usr": {"account": "a", "identity": ALICE_DN, "method": ["x509"]}},
            r"login method \['x509'\] is not one of",
        ),
        (
            {"usr": {"account": "a", "identity": ALICE_DN, "method": "x509", "fqans": [1]}},
            "names no user's fqans",
        ),
        ({"jti": None}, "names no jti"),
        ({"jti": ["x"]}, "names no jti"),
        ({"iss": "bad:name"}, "no valid 'iss'"),
        ({"exp": "soon"}, "no valid 'exp' claim"),
        ({"iat": None}, "no valid 'iat' claim"),
        ({"aud": [SITE, "site-b"]}, r"is for site \['site-a', 'site-b'\]"),
        ({"htu": None}, "another path or query"),
        ({"bh": None}, "body does not match"),
    ],
)
def test_malformed_claims(fed: FedWorld, change: dict[str, Any], reason: str) -> None:
    token = forge(claims_for(**change), key=fed.broker.key, chain=[fed.broker.cert])
    refused(verifier(fed), token, reason, target="/api/v1/vms", body=b"{}")


def test_a_password_users_federated_identity_is_accepted(fed: FedWorld) -> None:
    user = DelegatedUser("carol", f"federated:{BROKER}:carol", "password")
    assert check(verifier(fed), sign(fed.signer(), user)) == user


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "not a JWT"),
        ("a.b", "not a JWT"),
        ("a.b.c.d", "not a JWT"),
        ("!!!.e30.", "header is not base64url"),
        ("bnVsbA.e30.", "header is not a JSON object"),
        ("e30.e30.", "algorithm None is not accepted"),
        (
            _unsigned({"alg": "RS256"}, {}),
            "header type is not 'JWT'",
        ),
        (_unsigned({"alg": "RS256", "typ": "JWT"}, {}), r"no certificate chain \(x5c\)"),
        (
            _unsigned({"alg": "RS256", "typ": "JWT", "x5c": ["%%%"]}, {}),
            r"\(x5c\) is not base64",
        ),
        (
            _unsigned({"alg": "RS256", "typ": "JWT", "x5c": ["AAAA"]}, {}),
            "unreadable certificate",
        ),
        (
            _unsigned({"alg": "RS256", "typ": "JWT", "crit": ["exp"], "x5c": ["AAAA"]}, {}),
            "critical header parameters",
        ),
        ("x" * 70_000, "too large"),
    ],
)
def test_malformed_assertions(fed: FedWorld, token: str, reason: str) -> None:
    refused(verifier(fed), token, reason)


def test_non_canonical_base64_is_refused(fed: FedWorld) -> None:
    token = sign(fed.signer())
    header, payload, signature = token.split(".")
    # The last character of a 256-byte signature carries 2 unused bits: set one of them.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet[alphabet.index(signature[-1]) ^ 1]
    refused(verifier(fed), f"{header}.{payload}.{signature[:-1]}{last}", "not canonical")


# --- the signer's own rules --------------------------------------------------------


def test_signer_rules(fed: FedWorld, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not belong to the first certificate"):
        DelegationSigner(broker=BROKER, chain=[fed.broker.cert], key=fed.rogue.key)
    with pytest.raises(ValueError, match="only P-256"):
        DelegationSigner(
            broker=BROKER, chain=[fed.broker.cert], key=ec.generate_private_key(ec.SECP384R1())
        )
    with pytest.raises(ValueError, match="broker name"):
        DelegationSigner(broker="a:b", chain=[fed.broker.cert], key=fed.broker.key)
    with pytest.raises(ValueError, match="chain is empty"):
        DelegationSigner(broker=BROKER, chain=[], key=fed.broker.key)
    with pytest.raises(ValueError, match="lifetime"):
        DelegationSigner(broker=BROKER, chain=[fed.broker.cert], key=fed.broker.key, lifetime=0)
    signer = DelegationSigner.from_files(
        broker=BROKER, cert=fed.broker.cert_path, key=fed.broker.key_path
    )
    first = sign(signer)
    second = sign(signer)
    assert first != second
    jtis = {jwt.decode(t, options={"verify_signature": False})["jti"] for t in (first, second)}
    assert len(jtis) == 2


def test_weak_rsa_broker_key_is_refused(fed: FedWorld) -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from tests.auth.pki import grid_name, now

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    cert = (
        x509.CertificateBuilder()
        .subject_name(grid_name(BROKER_DN))
        .issuer_name(fed.ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - dt.timedelta(hours=1))
        .not_valid_after(now() + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(fed.ca.key, hashes.SHA256())
    )
    with pytest.warns(InsecureKeyLengthWarning):
        token = forge(claims_for(), key=key, chain=[cert])
    v = verifier(fed, broker_url="https://localhost:8450")
    refused(v, token, "shorter than 2048 bits", target="/api/v1/vms", body=b"{}")


def test_verifier_rules(fed: FedWorld) -> None:
    trust = TrustStore.load(fed.ca_dir)
    with pytest.raises(ValueError, match="name the broker"):
        DelegationVerifier(site=SITE, trust=trust, crl_policy=CrlPolicy.STRICT)
    with pytest.raises(ValueError, match="has no host name"):
        DelegationVerifier.for_site(site=SITE, ca=fed.ca_dir, broker_url="/x", broker_dn=None)
    with pytest.raises(ValueError, match="max_skew"):
        DelegationVerifier(
            site=SITE, trust=trust, crl_policy=CrlPolicy.OFF, broker_host="h", max_skew=-1
        )


def test_strict_crl_policy_with_the_ca_directory(fed: FedWorld) -> None:
    v = DelegationVerifier(
        site=SITE,
        trust=TrustStore.load(fed.ca_dir),
        crl_policy=CrlPolicy.STRICT,
        broker_host="127.0.0.1",
    )
    assert check(v, sign(fed.signer())) == ALICE
    refused(v, sign(fed.signer(fed.revoked)), "revoked")
