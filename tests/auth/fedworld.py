"""A broker's PKI for the delegation tests (made like ``tests/broker/fedenv.py``'s).

One federation CA (its CRL revokes one broker certificate), the broker's
certificate for 127.0.0.1 (RSA, and an EC P-256 one), a certificate of the
same CA for another host, an expired broker certificate, and a rogue CA
with a certificate that copies the broker's DN and address. Built once per
test session (:func:`fed` in ``conftest.py``).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from auth.delegation import DelegatedUser, DelegationSigner, body_hash
from tests.auth.pki import Cred, Pki, grid_name, now

BROKER = "test-broker"
SITE = "site-a"
BROKER_URL = "https://127.0.0.1:8450"
BROKER_DN = "/DC=org/DC=stratus-test/CN=127.0.0.1"


@dataclass
class EcCred:
    """An EC P-256 certificate and its key (Pki makes RSA ones only)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass
class FedWorld:
    pki: Pki
    ca: Cred
    broker: Cred
    broker_ec: EcCred
    other_host: Cred  # same CA, CN=other.example.org, no SAN
    revoked: Cred  # the broker's DN and address, on the CA's CRL
    expired: Cred
    rogue_ca: Cred
    rogue: Cred  # the broker's DN and address, from a CA nobody trusts
    ca_dir: Path  # hashed directory: the CA and its CRL
    ca_file: Path  # PEM bundle: the CA certificate and its CRL

    def signer(self, cred: Cred | EcCred | None = None, **kwargs: Any) -> DelegationSigner:
        cred = cred or self.broker
        return DelegationSigner(broker=BROKER, chain=[cred.cert], key=cred.key, **kwargs)


def _ec_broker(ca: Cred) -> EcCred:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(grid_name(BROKER_DN))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - dt.timedelta(hours=1))
        .not_valid_after(now() + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return EcCred(cert=cert, key=key)


def build(root: Path) -> FedWorld:
    pki = Pki(root)
    ca = pki.ca("fedca", "/DC=org/DC=stratus-test/CN=Federation Test CA")
    broker = pki.issue(ca, "broker", BROKER_DN, server_ip="127.0.0.1")
    other = pki.issue(ca, "other", "/DC=org/DC=stratus-test/CN=other.example.org")
    revoked = pki.issue(ca, "revoked-broker", BROKER_DN, server_ip="127.0.0.1")
    expired = pki.issue(
        ca,
        "old-broker",
        BROKER_DN,
        server_ip="127.0.0.1",
        not_before=now() - dt.timedelta(days=60),
        not_after=now() - dt.timedelta(days=1),
    )
    rogue_ca = pki.ca("rogueca", "/DC=org/DC=rogue/CN=Rogue CA")
    rogue = pki.issue(rogue_ca, "rogue-broker", BROKER_DN, server_ip="127.0.0.1")
    crl = pki.crl(ca, [revoked.cert])
    ca_dir = pki.ca_dir("federation", [ca], {"fedca": crl})
    ca_file = root / "federation-ca.pem"
    ca_file.write_bytes(
        ca.cert.public_bytes(serialization.Encoding.PEM)
        + crl.public_bytes(serialization.Encoding.PEM)
    )
    return FedWorld(
        pki=pki,
        ca=ca,
        broker=broker,
        broker_ec=_ec_broker(ca),
        other_host=other,
        revoked=revoked,
        expired=expired,
        rogue_ca=rogue_ca,
        rogue=rogue,
        ca_dir=ca_dir,
        ca_file=ca_file,
    )


ALICE_DN = "/DC=org/DC=test/O=People/CN=Alice Smith"
ALICE = DelegatedUser(
    account="alice-smith",
    identity=ALICE_DN,
    method="x509",
    groups=frozenset({"testvo", "testvo/analysis"}),
    fqans=("/testvo/Role=NULL/Capability=NULL", "/testvo/analysis/Role=NULL/Capability=NULL"),
)


def claims_for(
    user: DelegatedUser = ALICE,
    *,
    method: str = "POST",
    target: str = "/api/v1/vms",
    body: bytes = b"{}",
    at: float | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """The claims a correct broker would sign; ``overrides`` replace or (None) drop claims."""
    issued = int(at if at is not None else now().timestamp())
    claims: dict[str, Any] = {
        "iss": BROKER,
        "aud": SITE,
        "iat": issued,
        "nbf": issued,
        "exp": issued + 60,
        "jti": secrets.token_urlsafe(12),
        "htm": method,
        "htu": target,
        "bh": body_hash(body),
        "usr": {
            "account": user.account,
            "identity": user.identity,
            "method": user.method,
            "groups": sorted(user.groups),
            "fqans": list(user.fqans),
        },
    }
    for name, value in overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def forge(
    claims: dict[str, Any],
    *,
    key: Any,
    chain: list[x509.Certificate],
    algorithm: str = "RS256",
    headers: dict[str, Any] | None = None,
) -> str:
    """An assertion with exactly these claims, signed by ``key`` (any key, any chain)."""
    x5c = [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in chain]
    return jwt.encode(
        claims, key, algorithm=algorithm, headers={"typ": "JWT", "x5c": x5c, **(headers or {})}
    )
