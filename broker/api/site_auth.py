"""Authenticating a site's heartbeat by its TLS client certificate (mutual TLS).

The broker's HTTPS listener verifies a presented client certificate in the
handshake against its CA directory (``[tls] ca_dir``, CRLs under the
``strict`` policy); a certificate that does not verify never reaches HTTP.
Here the verified end-entity DN is read from the connection and must be the
DN configured for the site named in the path (``[[trusted_sites]]``).
Proxy certificates are not accepted for sites.
"""

from __future__ import annotations

from aiohttp import web
from cryptography import x509

from auth.cadir import TrustStore
from auth.config import CrlPolicy
from auth.errors import CredentialRejected
from auth.tls import peer_certificates
from auth.x509 import identity_from_chain
from broker.config import TrustedSite
from broker.errors import NoSiteCertificate, SiteNotTrusted


def peer_dn(
    request: web.Request, *, trust: TrustStore | None = None, crl_policy: CrlPolicy | None = None
) -> str:
    """The verified DN of the request's TLS client certificate.

    ``NoSiteCertificate`` without TLS or without a client certificate;
    ``SiteNotTrusted`` for a proxy certificate or (policies ``if-present`` /
    ``best-effort``, checked here with ``trust``) a revoked one.
    """
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        raise NoSiteCertificate(
            "site heartbeats must come over HTTPS with the site's client certificate"
        )
    peer = peer_certificates(ssl_object)
    if peer is None:
        raise NoSiteCertificate("no client certificate presented: sites register over mutual TLS")
    ders = peer.chain or (peer.leaf,)
    try:
        chain = [x509.load_der_x509_certificate(der) for der in ders]
        identity = identity_from_chain(chain, accept_proxies=False)
        if trust is not None and crl_policy in (CrlPolicy.IF_PRESENT, CrlPolicy.BEST_EFFORT):
            trust.check_revocation(list(identity.chain), crl_policy)
    except (CredentialRejected, ValueError) as exc:
        raise SiteNotTrusted(f"site certificate refused: {exc}") from exc
    return identity.dn


def check_site(name: str, dn: str, trusted: TrustedSite | None) -> TrustedSite:
    """The trusted entry of site ``name`` if ``dn`` is its certificate's DN."""
    if trusted is None:
        raise SiteNotTrusted(
            f"site {name!r} is not trusted by this broker (not in [[trusted_sites]])",
            details={"dn": dn},
        )
    if trusted.dn != dn:
        raise SiteNotTrusted(
            f"certificate {dn} is not the one trusted for site {name!r}", details={"dn": dn}
        )
    return trusted
