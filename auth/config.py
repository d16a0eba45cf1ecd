"""The ``[auth]`` section of a service configuration, as typed models.

The site agent and the broker embed :class:`AuthConfig` in their TOML config
under ``[auth]``; ``docs/authentication.md`` explains every field. Example::

    [auth.x509]
    enabled = true
    ca_dir = "/etc/grid-security/certificates"
    crl_policy = "strict"
    server_cert = "/etc/grid-security/hostcert.pem"
    server_key = "/etc/grid-security/hostkey.pem"

    [auth.voms]
    vomsdir = "/etc/grid-security/vomsdir"

    [[auth.oidc.issuers]]
    issuer = "https://aai.example.org/oidc/"
    audience = ["stratus"]

    [[auth.tokens]]
    token_hash = "sha256:..."
    account = "ops"

    [auth.registration]
    auto = true

Unknown keys are errors (a typo must not silently weaken security).
"""

from __future__ import annotations

from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from auth.principal import Role

JwtAlgorithm = Literal["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]
RegistrationMethod = Literal["x509", "oidc", "federated"]

ALLOWED_JWT_ALGORITHMS: tuple[JwtAlgorithm, ...] = get_args(JwtAlgorithm)
"""The only JWT signature algorithms ever accepted (no ``none``, no HMAC)."""


def _all_algorithms() -> list[JwtAlgorithm]:
    return list(ALLOWED_JWT_ALGORITHMS)


def _all_methods() -> list[RegistrationMethod]:
    return ["x509", "oidc", "federated"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CrlPolicy(StrEnum):
    """What to do when a CA of the chain has no CRL, or only an expired one.

    A certificate listed as revoked in a CRL that is present is refused under
    every policy except ``off``.
    """

    STRICT = "strict"  # every CA in the chain needs a current CRL (OpenSSL CRL_CHECK_ALL)
    IF_PRESENT = "if-present"  # a missing CRL is accepted; an expired one is refused
    BEST_EFFORT = "best-effort"  # missing or expired CRLs accepted (revocations still honoured)
    OFF = "off"  # CRLs are not consulted at all (tests, closed networks)


class TrustedProxyConfig(_Strict):
    """TLS terminated by a front proxy that forwards the client chain in headers.

    Only requests whose peer address is in ``addresses`` may carry the
    headers; the same headers from any other address are refused (401).
    """

    addresses: list[IPv4Network | IPv6Network] = Field(min_length=1)
    cert_header: str = "X-SSL-Client-Cert"
    chain_header: str | None = "X-SSL-Client-Chain"


class X509Config(_Strict):
    """Grid certificates: the CA directory, CRL policy, proxies and the TLS server identity."""

    enabled: bool = False
    ca_dir: Path = Path("/etc/grid-security/certificates")
    crl_policy: CrlPolicy = CrlPolicy.STRICT
    accept_proxies: bool = True
    accept_limited_proxies: bool = False
    max_proxy_depth: int = Field(default=10, ge=1, le=100)
    server_cert: Path | None = None
    server_key: Path | None = None
    require_client_cert: bool = False
    trusted_proxy: TrustedProxyConfig | None = None


class VomsConfig(_Strict):
    """VOMS attribute certificates found in proxies.

    ``vomsdir`` holds ``<vo>/<host>.lsc`` files (subject DN then issuer DN of
    the VOMS server, validated through the chain the AC carries) and/or plain
    PEM certificates of VOMS servers (``<vo>/<host>.pem`` for one VO, or
    directly in ``vomsdir`` for any VO). ``vos`` limits the accepted VOs
    (empty: every VO that has an entry in ``vomsdir``). A VOMS role listed in
    ``admin_roles`` makes its holder a group admin of the FQAN's group.
    ACs carrying targets are accepted only when one target is in
    ``service_hostnames``.
    """

    enabled: bool = True
    vomsdir: Path = Path("/etc/grid-security/vomsdir")
    vos: list[str] = Field(default_factory=list)
    admin_roles: list[str] = Field(default_factory=lambda: ["VO-Admin"])
    service_hostnames: list[str] = Field(default_factory=list)
    clock_skew_seconds: int = Field(default=60, ge=0, le=3600)


class OidcIssuerConfig(_Strict):
    """One trusted OpenID Connect issuer.

    ``issuer`` must equal the ``iss`` claim and the discovery document's
    ``issuer`` exactly. ``https`` is required except for loopback hosts.
    Group claims are read from ``groups_claims``: plain group lists
    (``"/vo/sub"`` or ``"vo/sub"``) and AARC-G002 entitlements
    (``<entitlement_namespace>:group:vo:sub:role=member#authority``; without a
    configured namespace entitlements are ignored). ``group_prefix`` is
    prepended to every group of this issuer (to keep issuers apart); a role
    in ``admin_roles`` makes the holder a group admin of that group.
    """

    issuer: str
    audience: list[str] = Field(min_length=1)
    groups_claims: list[str] = Field(default_factory=lambda: ["eduperson_entitlement", "groups"])
    entitlement_namespace: str | None = None
    group_prefix: str = ""
    admin_roles: list[str] = Field(default_factory=list)
    username_claim: str = "preferred_username"
    algorithms: list[JwtAlgorithm] = Field(default_factory=_all_algorithms, min_length=1)

    @field_validator("issuer")
    @classmethod
    def _https_or_loopback(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("issuer must be an absolute https URL")
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("issuer must use https (plain http only on loopback, for tests)")
        return value


class OidcConfig(_Strict):
    """OIDC bearer tokens: trusted issuers and cache timing."""

    issuers: list[OidcIssuerConfig] = Field(default_factory=list)
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    jwks_ttl_seconds: int = Field(default=3600, ge=10)
    min_refresh_interval_seconds: float = Field(default=10.0, ge=0)
    token_cache_seconds: int = Field(default=300, ge=0)
    token_cache_size: int = Field(default=10_000, ge=0)
    http_timeout_seconds: float = Field(default=5.0, gt=0)

    @field_validator("issuers")
    @classmethod
    def _unique(cls, issuers: list[OidcIssuerConfig]) -> list[OidcIssuerConfig]:
        names = [i.issuer for i in issuers]
        if len(set(names)) != len(names):
            raise ValueError("an issuer is listed twice")
        return issuers


class TokenConfig(_Strict):
    """A static API token: only its ``sha256:<hex>`` hash is stored."""

    token_hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    account: str = Field(min_length=1, max_length=64)
    admin: bool = False
    groups: list[str] = Field(default_factory=list)


class PasswordsConfig(_Strict):
    """Local username/password accounts (``Authorization: Basic``)."""

    enabled: bool = False
    min_length: int = Field(default=12, ge=8, le=1024)


class RegistrationConfig(_Strict):
    """What happens when a valid credential belongs to no account yet.

    With ``auto`` an account named after the identity (the certificate CN,
    the OIDC ``preferred_username``...) is created on first login for the
    ``methods`` listed (``federated``: a user the trusted broker vouches
    for by delegation whose identity is the broker's own, see
    :mod:`auth.delegation`), provided the credential carries one of
    ``require_groups`` when that list is not empty. Otherwise the request is
    refused with 403 until an admin links the identity to an account. A
    credential that fails verification never creates anything.
    """

    auto: bool = True
    methods: list[RegistrationMethod] = Field(default_factory=_all_methods)
    require_groups: list[str] = Field(default_factory=list)
    default_role: Role = Role.USER


class AuthConfig(_Strict):
    """Everything a service needs to authenticate its callers."""

    x509: X509Config = Field(default_factory=X509Config)
    voms: VomsConfig = Field(default_factory=VomsConfig)
    oidc: OidcConfig = Field(default_factory=OidcConfig)
    tokens: list[TokenConfig] = Field(default_factory=list)
    passwords: PasswordsConfig = Field(default_factory=PasswordsConfig)
    registration: RegistrationConfig = Field(default_factory=RegistrationConfig)
    principal_cache_seconds: float = Field(default=60.0, ge=0)
    max_authorization_header: int = Field(default=16 * 1024, ge=1024)
