"""The broker's signing certificate, as a site checks it before trusting an assertion.

A delegation assertion (:mod:`auth.delegation`) carries the broker's chain
in its ``x5c`` header. :class:`BrokerKeys` turns that chain into the public
key that must have signed the assertion, after checking, in this order:

1. the chain verifies against the site's trusted CAs (pyOpenSSL,
   :class:`~auth.x509.ChainVerifier`, proxies refused) and the CRL policy;
2. the leaf certificate is within its validity period (by this verifier's
   clock, with ``max_skew`` for ``notBefore``);
3. it is the broker's: its subject DN is ``broker_dn`` when configured, else
   it is valid for ``broker_host`` as a TLS client would decide
   (:mod:`auth.hostname`);
4. its key can sign assertions: RSA of at least 2048 bits (``RS256``) or EC
   P-256 (``ES256``).

A chain that passes is cached by the SHA-256 of its leaf until the
certificate expires, at most :data:`CHAIN_CACHE_SECONDS` (so CRL state is
looked at again that often); refusals are never cached. Every refusal is a
``CredentialRejected`` whose message starts ``delegated request refused:``.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from auth.cache import TtlCache
from auth.cadir import TrustStore
from auth.claims import refused
from auth.config import CrlPolicy
from auth.dn import grid_dn
from auth.errors import CredentialRejected
from auth.hostname import certificate_matches_host
from auth.x509 import MAX_CHAIN_LENGTH, ChainVerifier

CHAIN_CACHE_SECONDS = 300.0
KEY_CACHE_SIZE = 64  # distinct broker leaf certificates at once (rollover, several brokers)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def algorithm_for(key: PrivateKey | PublicKey) -> str:
    """``RS256`` for an RSA key, ``ES256`` for an EC P-256 key; ValueError for any other key."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return "ES256"
        raise ValueError(f"EC curve {key.curve.name} is not supported (only P-256, for ES256)")
    raise ValueError(f"{type(key).__name__} keys cannot sign delegation assertions")


def system_trust() -> TrustStore:
    """The system's default CAs (what ``ssl.create_default_context()`` trusts)."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.capath):
        if candidate and Path(candidate).exists():
            return TrustStore.load_path(Path(candidate))
    raise FileNotFoundError("no CA file or directory given and no system CA bundle found")


@dataclass(frozen=True)
class BrokerKey:
    """A verified broker certificate's public key, its JWT algorithm and its subject DN."""

    key: PublicKey
    algorithm: str
    dn: str


class BrokerKeys:
    """Verifies ``x5c`` chains as the broker's and caches the result (module docstring)."""

    def __init__(
        self,
        *,
        trust: TrustStore,
        crl_policy: CrlPolicy,
        broker_dn: str | None,
        broker_host: str | None,
        max_skew: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not broker_dn and not broker_host:
            raise ValueError("name the broker: its certificate DN or its host name")
        self._chains = ChainVerifier(trust, crl_policy, accept_proxies=False)
        self._broker_dn = broker_dn or None
        self._broker_host = broker_host
        self._skew = max_skew
        self._clock = clock
        self._cache: TtlCache[bytes, BrokerKey] = TtlCache(KEY_CACHE_SIZE)

    def key_for(self, x5c: object) -> BrokerKey:
        """The broker key of the ``x5c`` header value (base64 DER, leaf first), or refuse."""
        if not isinstance(x5c, list) or not x5c or not all(isinstance(c, str) for c in x5c):
            raise refused("the assertion carries no certificate chain (x5c)")
        if len(x5c) > MAX_CHAIN_LENGTH:
            raise refused(f"the certificate chain is longer than {MAX_CHAIN_LENGTH}")
        try:
            leaf_der = base64.b64decode(x5c[0], validate=True)
        except ValueError as exc:
            raise refused("the certificate chain (x5c) is not base64") from exc
        fingerprint = hashlib.sha256(leaf_der).digest()
        now = self._clock()
        cached = self._cache.get(fingerprint, now)
        if cached is not None:
            return cached
        try:
            ders = [leaf_der, *(base64.b64decode(c, validate=True) for c in x5c[1:])]
        except ValueError as exc:
            raise refused("the certificate chain (x5c) is not base64") from exc
        try:
            certs = [x509.load_der_x509_certificate(d) for d in ders]
        except ValueError as exc:
            raise refused("the certificate chain (x5c) holds an unreadable certificate") from exc
        leaf = certs[0]
        try:
            self._chains.verify(leaf, certs[1:])
        except CredentialRejected as exc:
            raise refused(f"the signing certificate is not trusted: {exc}") from exc
        dn = grid_dn(leaf.subject)
        not_after = leaf.not_valid_after_utc.timestamp()
        if not_after < now:
            raise refused(f"the broker's certificate {dn} has expired")
        if leaf.not_valid_before_utc.timestamp() > now + self._skew:
            raise refused(f"the broker's certificate {dn} is not valid yet")
        self._check_is_broker(leaf, dn)
        key, algorithm = self._signing_key(leaf, dn)
        entry = BrokerKey(key=key, algorithm=algorithm, dn=dn)
        self._cache.put(fingerprint, entry, min(not_after, now + CHAIN_CACHE_SECONDS))
        return entry

    def _check_is_broker(self, leaf: x509.Certificate, dn: str) -> None:
        if self._broker_dn is not None:
            if self._broker_dn not in (dn, leaf.subject.rfc4514_string()):
                raise refused(f"certificate {dn} is not the broker's ({self._broker_dn})")
            return
        assert self._broker_host is not None
        if not certificate_matches_host(leaf, self._broker_host):
            raise refused(
                f"certificate {dn} is not valid for the broker's host {self._broker_host}"
            )

    @staticmethod
    def _signing_key(leaf: x509.Certificate, dn: str) -> tuple[PublicKey, str]:
        key = leaf.public_key()
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise refused(f"the key of {dn} cannot sign assertions")
        try:
            algorithm = algorithm_for(key)
        except ValueError as exc:
            raise refused(f"the key of {dn}: {exc}") from exc
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
            raise refused(f"the RSA key of {dn} is shorter than 2048 bits")
        return key, algorithm
