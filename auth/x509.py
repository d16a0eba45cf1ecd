"""X.509 client certificates and RFC 3820 proxy certificates.

Two ways a chain reaches this module:

* TLS: the handshake already verified it (``ssl`` with OpenSSL's
  ALLOW_PROXY_CERTS, see :mod:`auth.tls`); :func:`identity_from_chain`
  applies the proxy policy and finds the end-entity certificate.
* A trusted TLS-terminating front proxy forwards the client certificate (and
  optionally its chain) in headers; :class:`ChainVerifier` verifies it with
  pyOpenSSL against the :class:`~auth.cadir.TrustStore` (store built once),
  then :func:`identity_from_chain` runs as above.

The identity is the end-entity DN in grid form (``/DC=org/.../CN=Jane``):
walking from the leaf, every certificate with the ProxyCertInfo extension is
a proxy; the first one without it is the end entity. Proxy policy languages
accepted: *inherit all* (full rights) and the Globus *limited* language
(refused unless ``accept_limited_proxies``). Independent and other
restricted proxies are refused: their rights cannot be honoured.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import crypto
from pyasn1.codec.der import decoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import namedtype, univ

from auth.cadir import TrustStore
from auth.config import CrlPolicy
from auth.dn import grid_dn
from auth.errors import CredentialRejected

PROXY_CERT_INFO_OID = "1.3.6.1.5.5.7.1.14"
POLICY_INHERIT_ALL = "1.3.6.1.5.5.7.21.1"
POLICY_INDEPENDENT = "1.3.6.1.5.5.7.21.2"
POLICY_LIMITED = "1.3.6.1.4.1.3536.1.1.1.9"

MAX_CHAIN_LENGTH = 16


class _ProxyPolicy(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("policyLanguage", univ.ObjectIdentifier()),
        namedtype.OptionalNamedType("policy", univ.OctetString()),
    )


class _ProxyCertInfo(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("pCPathLenConstraint", univ.Integer()),
        namedtype.NamedType("proxyPolicy", _ProxyPolicy()),
    )


@dataclass(frozen=True)
class ProxyInfo:
    """The ProxyCertInfo extension of one RFC 3820 proxy certificate."""

    policy_language: str
    path_length: int | None

    @property
    def limited(self) -> bool:
        return self.policy_language == POLICY_LIMITED


def proxy_info(cert: x509.Certificate) -> ProxyInfo | None:
    """The RFC 3820 ProxyCertInfo of ``cert``, or None if ``cert`` is not a proxy.

    Raises ``CredentialRejected`` if the extension is present but malformed.
    """
    for ext in cert.extensions:
        if ext.oid.dotted_string != PROXY_CERT_INFO_OID:
            continue
        raw = ext.value.value if isinstance(ext.value, x509.UnrecognizedExtension) else b""
        try:
            info, rest = decoder.decode(raw, asn1Spec=_ProxyCertInfo())
        except PyAsn1Error as exc:
            raise CredentialRejected(
                "malformed ProxyCertInfo extension in proxy certificate"
            ) from exc
        if rest:
            raise CredentialRejected("malformed ProxyCertInfo extension in proxy certificate")
        length = info["pCPathLenConstraint"]
        return ProxyInfo(
            policy_language=str(info["proxyPolicy"]["policyLanguage"]),
            path_length=int(length) if length.isValue else None,
        )
    return None


@dataclass(frozen=True)
class CertIdentity:
    """What a verified certificate chain proves.

    ``chain`` is leaf first; ``end_entity`` is ``chain[proxy_depth]``.
    ``not_after`` is the earliest expiry in the chain up to the end entity.
    """

    dn: str
    end_entity: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    proxy_depth: int
    limited: bool
    not_after: datetime

    @property
    def proxies(self) -> tuple[x509.Certificate, ...]:
        """The proxy certificates of the chain, leaf first."""
        return self.chain[: self.proxy_depth]


def identity_from_chain(
    chain: Sequence[x509.Certificate],
    *,
    accept_proxies: bool = True,
    accept_limited: bool = False,
    max_proxy_depth: int = 10,
) -> CertIdentity:
    """The identity proved by ``chain`` (leaf first), which must already be verified.

    Refuses (``CredentialRejected``): proxies when ``accept_proxies`` is false,
    limited proxies unless ``accept_limited``, independent or other
    restricted proxies, more than ``max_proxy_depth`` proxy levels, and a
    chain made of proxies only.
    """
    if not chain:
        raise CredentialRejected("no client certificate")
    depth = 0
    limited = False
    for cert in chain:
        info = proxy_info(cert)
        if info is None:
            break
        if not accept_proxies:
            raise CredentialRejected("proxy certificates are not accepted by this service")
        if info.limited:
            limited = True
        elif info.policy_language == POLICY_INDEPENDENT:
            raise CredentialRejected("independent proxy certificates are not accepted")
        elif info.policy_language != POLICY_INHERIT_ALL:
            raise CredentialRejected(
                f"proxy policy language {info.policy_language} is not supported"
            )
        depth += 1
    if depth >= len(chain):
        raise CredentialRejected("the proxy chain does not include the end-entity certificate")
    if depth > max_proxy_depth:
        raise CredentialRejected(f"more than {max_proxy_depth} proxy levels")
    end_entity = chain[depth]
    dn = grid_dn(end_entity.subject)
    if limited and not accept_limited:
        raise CredentialRejected(f"limited proxy of {dn} refused by policy")
    not_after = min(c.not_valid_after_utc for c in chain[: depth + 1])
    return CertIdentity(
        dn=dn,
        end_entity=end_entity,
        chain=tuple(chain),
        proxy_depth=depth,
        limited=limited,
        not_after=not_after,
    )


def parse_forwarded_certificates(value: str) -> list[x509.Certificate]:
    """Certificates from a front-proxy header.

    Accepts URL-encoded PEM (nginx ``$ssl_client_escaped_cert``), PEM whose
    newlines were turned into spaces or tabs (Apache-style), and bare base64
    DER. Raises ``CredentialRejected`` when nothing parses.
    """
    text = unquote(value).strip()
    if not text:
        raise CredentialRejected("empty client certificate header")
    try:
        if "-----BEGIN CERTIFICATE-----" in text:
            text = _restore_pem_newlines(text)
            return x509.load_pem_x509_certificates(text.encode())
        return [x509.load_der_x509_certificate(base64.b64decode(text, validate=True))]
    except ValueError as exc:
        raise CredentialRejected(
            "the client certificate header does not hold a certificate"
        ) from exc


def _restore_pem_newlines(text: str) -> str:
    out = []
    for block in text.split("-----END CERTIFICATE-----"):
        if "-----BEGIN CERTIFICATE-----" not in block:
            continue
        body = block.split("-----BEGIN CERTIFICATE-----", 1)[1]
        body = "".join(body.split())
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        out.append(
            "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"
        )
    return "".join(out)


class ChainVerifier:
    """Verifies client chains in Python (pyOpenSSL) against a :class:`TrustStore`.

    The X509Store is built once, in the constructor; each call only creates
    the per-verification context. Proxies are accepted by OpenSSL's RFC 3820
    rules (ALLOW_PROXY_CERTS): a proxy must be signed by the certificate it
    extends and its subject must be that certificate's subject plus one CN,
    so a proxy signed by another user is refused.
    """

    def __init__(
        self,
        trust: TrustStore,
        crl_policy: CrlPolicy,
        *,
        accept_proxies: bool = True,
        accept_limited: bool = False,
        max_proxy_depth: int = 10,
    ) -> None:
        self._trust = trust
        self._policy = crl_policy
        self._accept_proxies = accept_proxies
        self._accept_limited = accept_limited
        self._max_depth = max_proxy_depth
        self._store = trust.openssl_store(crl_policy, allow_proxies=accept_proxies)

    def verify_chain(
        self, leaf: x509.Certificate, extra: Sequence[x509.Certificate] = ()
    ) -> list[x509.Certificate]:
        """The verified chain (leaf first, up to the trust anchor) for ``leaf``.

        ``extra`` are untrusted intermediates (the user certificate and any
        proxies above the leaf). Applies the CRL policy; does not apply the
        proxy policy (see :meth:`verify`). Raises ``CredentialRejected``
        with OpenSSL's reason and the subject concerned.
        """
        if len(extra) + 1 > MAX_CHAIN_LENGTH:
            raise CredentialRejected(f"certificate chain longer than {MAX_CHAIN_LENGTH}")
        context = crypto.X509StoreContext(
            self._store,
            crypto.X509.from_cryptography(leaf),
            [crypto.X509.from_cryptography(c) for c in extra],
        )
        try:
            verified = context.get_verified_chain()
        except crypto.X509StoreContextError as exc:
            reason = exc.args[0] if exc.args else "verification failed"
            subject = grid_dn(exc.certificate.to_cryptography().subject) if exc.certificate else "?"
            raise CredentialRejected(f"certificate {subject} rejected: {reason}") from exc
        chain = [c.to_cryptography() for c in verified]
        if self._policy is not CrlPolicy.STRICT:
            self._trust.check_revocation(
                chain, self._policy, is_proxy=[proxy_info(c) is not None for c in chain]
            )
        return chain

    def verify(
        self, leaf: x509.Certificate, extra: Sequence[x509.Certificate] = ()
    ) -> CertIdentity:
        """Verify the chain and apply the proxy policy: the proved identity."""
        chain = self.verify_chain(leaf, extra)
        return identity_from_chain(
            chain,
            accept_proxies=self._accept_proxies,
            accept_limited=self._accept_limited,
            max_proxy_depth=self._max_depth,
        )


def der(cert: x509.Certificate) -> bytes:
    """The DER encoding of ``cert``."""
    return cert.public_bytes(Encoding.DER)
