"""TLS server contexts with grid client-certificate verification, and reading the peer chain.

:func:`server_ssl_context` is called ONCE at start-up and its context is
passed to ``web.TCPSite(..., ssl_context=...)``; no SSL context or certificate
store is ever built per request or per connection.

The handshake does the verification: OpenSSL checks the client chain
against the CA directory (``load_verify_locations(capath=...)``, hashed
``<hash>.0`` files) with RFC 3820 proxy rules (``VERIFY_ALLOW_PROXY_CERTS``)
and, under the ``strict`` CRL policy, the CRLs of every CA of the chain
(``VERIFY_CRL_CHECK_LEAF | VERIFY_CRL_CHECK_CHAIN``, ``<hash>.r0`` files).
A client whose certificate fails gets a TLS alert (``unknown_ca``,
``certificate_expired``, ``certificate_revoked``, ``bad_certificate``) and no
HTTP response: the ``ssl`` module cannot defer the decision to the
application. Under the other CRL policies the handshake checks no CRL and
:class:`~auth.cadir.TrustStore` applies the policy afterwards, so a revoked
certificate then gets a 401 with a JSON message.

OpenSSL caches a CRL once it has read it from the directory; after
``fetch-crl`` has updated the CRLs, restart the service (or build a new
context and a new site).

Reading the chain: ``getpeercert(binary_form=True)`` gives only the leaf
(for a proxy, the proxy itself). The verified chain (leaf ... root) comes
from ``SSLObject.get_verified_chain()`` (public since Python 3.13; the same
method exists on the private ``_sslobj`` since 3.10). A resumed TLS
session has no verified chain (OpenSSL does not store it in the session):
:func:`peer_certificates` then returns the leaf only, and the caller must
rely on what it recorded for that leaf when the session was first
established (see :class:`~auth.authenticator.Authenticator`). Session
tickets are disabled (``num_tickets = 0``, ``OP_NO_TICKET``) to make
resumption rare.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from auth.config import CrlPolicy

VERIFY_ALLOW_PROXY_CERTS = 0x40  # OpenSSL X509_V_FLAG_ALLOW_PROXY_CERTS


def server_ssl_context(
    cert: Path | str,
    key: Path | str,
    ca_dir: Path | str,
    *,
    crl_policy: CrlPolicy = CrlPolicy.STRICT,
    allow_proxies: bool = True,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """The server context: our certificate, client certs verified against ``ca_dir``.

    Only the CAs of ``ca_dir`` are trusted for client certificates (never the
    system store). With ``require_client_cert`` False a client may connect
    without a certificate (and use a token instead); a certificate that IS
    presented must verify. TLS 1.2 is the minimum.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    context.load_verify_locations(capath=str(ca_dir))
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    flags = context.verify_flags
    if allow_proxies:
        flags |= VERIFY_ALLOW_PROXY_CERTS
    if crl_policy is CrlPolicy.STRICT:
        flags |= ssl.VERIFY_CRL_CHECK_LEAF | ssl.VERIFY_CRL_CHECK_CHAIN
    context.verify_flags = flags
    context.options |= ssl.OP_NO_TICKET
    context.num_tickets = 0
    return context


class PeerCertificates:
    """The client certificates of one TLS connection, DER encoded.

    ``leaf`` is the client's certificate (for a proxy, the proxy itself).
    ``chain`` is the verified chain, leaf first, or None when the session was
    resumed (or the Python build offers no way to read it). The chain may be
    read lazily (``loader``): callers that find the leaf in a cache never pay
    for it.
    """

    __slots__ = ("_chain", "_loader", "leaf")

    def __init__(
        self,
        leaf: bytes,
        chain: tuple[bytes, ...] | None = None,
        *,
        loader: Callable[[], tuple[bytes, ...] | None] | None = None,
    ) -> None:
        self.leaf = leaf
        self._chain = chain
        self._loader = loader

    @property
    def chain(self) -> tuple[bytes, ...] | None:
        if self._loader is not None:
            self._chain = self._loader()
            self._loader = None
        return self._chain

    def __repr__(self) -> str:
        return f"PeerCertificates(leaf={len(self.leaf)} bytes)"


def peer_certificates(ssl_object: Any) -> PeerCertificates | None:
    """The verified client certificates of ``ssl_object`` (``ssl.SSLObject``/``SSLSocket``).

    None when the client presented no certificate. The chain is read when
    first asked for.
    """
    if ssl_object is None:
        return None
    leaf = ssl_object.getpeercert(binary_form=True)
    if not leaf:
        return None
    getter = getattr(ssl_object, "get_verified_chain", None)
    if getter is None:
        inner = getattr(ssl_object, "_sslobj", None)
        getter = getattr(inner, "get_verified_chain", None)
    if getter is None:
        return PeerCertificates(leaf)

    def load() -> tuple[bytes, ...] | None:
        raw = getter()
        return tuple(_to_der(c) for c in raw) if raw else None

    return PeerCertificates(leaf, loader=load)


def _to_der(cert: Any) -> bytes:
    if isinstance(cert, bytes):
        return cert  # Python 3.13+: get_verified_chain() returns DER bytes
    return bytes(cert.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
