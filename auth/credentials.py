"""What a request offers to prove who is calling, and what a verified credential proves.

:class:`Credentials` is the input of
:meth:`~auth.authenticator.Authenticator.authenticate`; :func:`credentials_from`
builds it from an aiohttp request (the auth middleware adds the body for
delegated requests, see :mod:`auth.middleware`). :class:`VerifiedLogin` is
a credential after verification and before the account lookup.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from auth.accounts.models import IdentityKind
from auth.cadir import TrustStore
from auth.config import CrlPolicy
from auth.delegation import SCHEME
from auth.tls import PeerCertificates, peer_certificates


@dataclass(frozen=True)
class Credentials:
    """What a request offers: the TLS peer certificates, the client address, the headers.

    ``method``, ``target`` (the path and query exactly as on the request
    line) and ``body`` matter only to a delegated request, whose assertion
    is bound to them (:mod:`auth.delegation`); the body is read for that
    scheme only.
    """

    peer: PeerCertificates | None = None
    remote: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    method: str = "GET"
    target: str = "/"
    body: bytes = b""


@dataclass(frozen=True)
class VerifiedLogin:
    """A verified credential, before the account lookup (``via``: the delegating broker)."""

    identity: str
    kind: IdentityKind
    method: str
    suggested_name: str
    display_name: str = ""
    groups: frozenset[str] = frozenset()
    admin_groups: frozenset[str] = frozenset()
    fqans: tuple[str, ...] = ()
    via: str | None = None


@dataclass(frozen=True)
class X509Settings:
    """What the certificate paths need: trust, policy, and the proxy rules."""

    trust: TrustStore
    crl_policy: CrlPolicy
    accept_proxies: bool = True
    accept_limited: bool = False
    max_proxy_depth: int = 10


def is_delegated(headers: Mapping[str, str]) -> bool:
    """True if the ``Authorization`` header uses the delegation scheme."""
    scheme = headers.get("Authorization", "").lstrip().partition(" ")[0]
    return scheme.lower() == SCHEME.lower()


def request_target(request: Any) -> str:
    """The path and query of an aiohttp request exactly as sent on the request line.

    ``raw_path`` is the request-target as received (``path_qs`` would be
    re-encoded by yarl: ``%7E`` becomes ``~``, ``%2F`` in a query ``/``), so it
    is what a delegation assertion's ``htu`` was computed from. An
    absolute-form target (``GET http://host/p``) falls back to ``path_qs``.
    """
    raw: str = request.raw_path
    return raw if raw.startswith("/") else str(request.path_qs)


def credentials_from(request: Any) -> Credentials:
    """The credentials of an aiohttp request (TLS peer chain, remote address, headers).

    The body is not read here (it is async and usually not needed); the
    middleware adds it for delegated requests.
    """
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    return Credentials(
        peer=peer_certificates(ssl_object),
        remote=request.remote,
        headers=request.headers,
        method=request.method,
        target=request_target(request),
    )
