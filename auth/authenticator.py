"""One object that turns a request's credentials into a :class:`~auth.principal.Principal`.

Methods are tried in this order; the FIRST credential present decides (a
rejected credential is never followed by a fallback to another method):

0. ``Authorization: Stratus-Delegation``: a broker acting for a user
   (:mod:`auth.delegation`), verified by the configured
   :class:`~auth.delegation.DelegationVerifier`; it comes before the TLS
   certificate because a broker may connect with its own certificate, which
   is not the user's. Without a verifier: 401 "this service does not accept
   delegated requests";
1. TLS client certificate (or RFC 3820 proxy) from the connection, already
   verified in the handshake (:mod:`auth.tls`);
2. client certificate headers from the trusted front proxy, verified here
   with pyOpenSSL (:class:`~auth.x509.ChainVerifier`);
3. ``Authorization: Bearer``: static API tokens (:mod:`auth.tokens`) first,
   then OIDC JWTs (:mod:`auth.oidc`);
4. ``Authorization: Basic``: local password accounts.

Identity to account (:class:`~auth.accounts.AccountStore`): a verified
identity (DN, ``sub@iss``, ``local:<name>``) linked to an account logs in as
that account. An unknown identity gets an account on first login if the
registration policy allows it (``auto``, method listed, required group
present), otherwise 403. Verification always comes first: a rejected
credential never reaches the store, so it can never create an account.
Static API tokens name their account in the config and need no store.
A delegated user is resolved the same way, through THIS service's store and
registration policy: kind ``x509``/``oidc`` for those login methods, else
``federated`` (``federated:<broker>:<account>``); the principal's ``method``
is ``delegated``, its ``via`` the broker's name, and its roles those of the
local account (the broker's own rights are never passed on).

Caches (all bounded; nothing expensive is redone per request):

* the finished principal by SHA-256 of the TLS leaf certificate or of the
  bearer token, for ``principal_cache_seconds`` at most (never past the
  token's ``exp`` or the certificate's/AC's expiry): the warm path of a
  request is one hash and one dictionary lookup;
* verified certificate chains by SHA-256 of the leaf (TLS) or of the
  forwarded headers, until the certificate or VOMS AC expires (5 min max);
* verified OIDC tokens by SHA-256 of the token, in :class:`~auth.oidc.OidcVerifier`;
* a delegated request's principal is never cached (its assertion is used
  once); the broker's verified certificate is, in the verifier;
* identity -> account for ``principal_cache_seconds`` (account changes such
  as a new role or a disabled account take effect within that time, or at
  once after :meth:`Authenticator.forget`).

Errors: ``NoCredential`` / ``CredentialRejected`` (401), ``AccessDenied`` (403),
``AuthUnavailable`` (503). Messages name the problem, never the secret.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime
from ipaddress import IPv4Network, IPv6Network, ip_address

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.engine import Engine

from auth.accounts.models import AccountPublic, IdentityKind
from auth.accounts.store import AccountStore, local_identity
from auth.cache import TtlCache
from auth.cadir import TrustStore
from auth.config import AuthConfig, CrlPolicy, RegistrationConfig, TrustedProxyConfig
from auth.credentials import (
    Credentials,
    VerifiedLogin,
    X509Settings,
    credentials_from,
    is_delegated,
)
from auth.delegation import GLOBAL_METHODS, SCHEME, DelegationVerifier
from auth.dn import common_name
from auth.errors import AccessDenied, CredentialRejected, HeaderTooLarge, NoCredential
from auth.oidc import IssuerSource, OidcVerifier
from auth.principal import Principal, Role
from auth.tls import PeerCertificates, server_ssl_context
from auth.tokens import TokenAuthenticator, TokenEntry
from auth.voms import VomsAttributes, VomsVerifier
from auth.x509 import (
    CertIdentity,
    ChainVerifier,
    identity_from_chain,
    parse_forwarded_certificates,
    proxy_info,
)

__all__ = [
    "Authenticator",
    "Credentials",
    "VerifiedLogin",
    "X509Settings",
    "credentials_from",
]

log = logging.getLogger(__name__)

CERT_CACHE_SECONDS = 300.0
CACHE_SIZE = 10_000
MAX_CHAIN_HEADER = 64 * 1024


def _dn_common_name(dn: str) -> str:
    """The last ``CN=`` value of a grid DN string (``/DC=org/CN=Jane Doe`` -> ``Jane Doe``)."""
    _, found, rest = dn.rpartition("/CN=")
    return rest.split("/", 1)[0] if found else ""


def _www_methods(x509_on: bool, bearer: bool, basic: bool) -> str:
    methods = []
    if x509_on:
        methods.append("a client certificate or proxy")
    if bearer:
        methods.append("'Authorization: Bearer <token>'")
    if basic:
        methods.append("'Authorization: Basic' (local account)")
    return ", ".join(methods) or "no method is enabled on this service"


class Authenticator:
    """Combines the configured methods; see the module docstring for order and policy."""

    def __init__(
        self,
        *,
        accounts: AccountStore | None = None,
        tokens: TokenAuthenticator | None = None,
        x509_settings: X509Settings | None = None,
        trusted_proxy: TrustedProxyConfig | None = None,
        voms: VomsVerifier | None = None,
        oidc: OidcVerifier | None = None,
        passwords: bool = False,
        registration: RegistrationConfig | None = None,
        principal_cache_seconds: float = 60.0,
        max_authorization_header: int = 16 * 1024,
        server_context_factory: Callable[[], ssl.SSLContext] | None = None,
        clock: Callable[[], float] = time.monotonic,
        delegation: DelegationVerifier | None = None,
    ) -> None:
        if accounts is None and (
            x509_settings is not None or oidc is not None or passwords or delegation is not None
        ):
            raise ValueError(
                "certificate, OIDC, password and delegated logins need an account store"
            )
        if trusted_proxy is not None and x509_settings is None:
            raise ValueError("the trusted proxy mode needs the x509 settings (CA directory)")
        self._accounts = accounts
        self._tokens = tokens
        self._x509 = x509_settings
        self._trusted_proxy = trusted_proxy
        self._proxy_networks: list[IPv4Network | IPv6Network] = (
            list(trusted_proxy.addresses) if trusted_proxy else []
        )
        self._chain_verifier = (
            ChainVerifier(
                x509_settings.trust,
                x509_settings.crl_policy,
                accept_proxies=x509_settings.accept_proxies,
                accept_limited=x509_settings.accept_limited,
                max_proxy_depth=x509_settings.max_proxy_depth,
            )
            if x509_settings is not None and trusted_proxy is not None
            else None
        )
        self._voms = voms
        self._oidc = oidc
        self._passwords = passwords
        self._delegation = delegation
        self._registration = registration or RegistrationConfig()
        self._principal_ttl = principal_cache_seconds
        self._max_header = max_authorization_header
        self._server_context_factory = server_context_factory
        self._clock = clock
        self._cert_cache: TtlCache[bytes, tuple[VerifiedLogin, float]] = TtlCache(CACHE_SIZE)
        self._account_cache: TtlCache[str, AccountPublic] = TtlCache(CACHE_SIZE)
        self._principals: TtlCache[bytes, Principal] = TtlCache(CACHE_SIZE)
        self._no_credential = NoCredential(
            "authentication required: present "
            + _www_methods(
                x509_settings is not None, tokens is not None or oidc is not None, passwords
            )
        )

    # --- construction -------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        config: AuthConfig,
        *,
        engine: Engine | None = None,
        accounts: AccountStore | None = None,
        oidc_source: IssuerSource | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        delegation: DelegationVerifier | None = None,
    ) -> Authenticator:
        """Build everything ``config`` enables, reading the CA directory and vomsdir once.

        ``engine`` (or a ready ``accounts`` store) is required when X.509,
        OIDC or passwords are enabled. ``oidc_source``/``transport`` replace
        the HTTP client used for the issuers (tests). ``delegation`` (built by
        the site from its ``[federation]`` section,
        :meth:`DelegationVerifier.for_site`) enables delegated requests.
        """
        if accounts is None and engine is not None:
            accounts = AccountStore(engine, min_password_length=config.passwords.min_length)
        tokens = (
            TokenAuthenticator(
                TokenEntry(
                    token_hash=t.token_hash,
                    account=t.account,
                    admin=t.admin,
                    groups=tuple(t.groups),
                )
                for t in config.tokens
            )
            if config.tokens
            else None
        )
        x509_settings = None
        voms = None
        factory = None
        xc = config.x509
        if xc.enabled:
            trust = TrustStore.load(xc.ca_dir)
            x509_settings = X509Settings(
                trust=trust,
                crl_policy=xc.crl_policy,
                accept_proxies=xc.accept_proxies,
                accept_limited=xc.accept_limited_proxies,
                max_proxy_depth=xc.max_proxy_depth,
            )
            if config.voms.enabled:
                voms = VomsVerifier(
                    config.voms, ChainVerifier(trust, xc.crl_policy, accept_proxies=False)
                )
            if xc.server_cert is not None and xc.server_key is not None:
                cert, key = xc.server_cert, xc.server_key

                def factory() -> ssl.SSLContext:
                    return server_ssl_context(
                        cert,
                        key,
                        xc.ca_dir,
                        crl_policy=xc.crl_policy,
                        allow_proxies=xc.accept_proxies,
                        require_client_cert=xc.require_client_cert,
                    )

        oidc = (
            OidcVerifier(config.oidc, oidc_source, transport=transport)
            if config.oidc.issuers
            else None
        )
        return cls(
            accounts=accounts,
            tokens=tokens,
            x509_settings=x509_settings,
            trusted_proxy=xc.trusted_proxy if xc.enabled else None,
            voms=voms,
            oidc=oidc,
            passwords=config.passwords.enabled,
            registration=config.registration,
            principal_cache_seconds=config.principal_cache_seconds,
            max_authorization_header=config.max_authorization_header,
            server_context_factory=factory,
            delegation=delegation,
        )

    def server_ssl_context(self) -> ssl.SSLContext | None:
        """A new server SSL context from the x509 config (None if no server cert is configured).

        Call it once at start-up and hand the context to ``web.TCPSite``.
        """
        return self._server_context_factory() if self._server_context_factory else None

    @property
    def accounts(self) -> AccountStore | None:
        return self._accounts

    @property
    def oidc(self) -> OidcVerifier | None:
        return self._oidc

    @property
    def accepts_delegation(self) -> bool:
        """True if delegated requests are verified here (else they get a 401)."""
        return self._delegation is not None

    async def aclose(self) -> None:
        """Close outbound connections (the OIDC client)."""
        if self._oidc is not None:
            await self._oidc.aclose()

    # --- authentication -------------------------------------------------------

    async def authenticate(self, credentials: Credentials) -> Principal:
        """The principal for ``credentials``; raises an ``AuthError`` subclass otherwise."""
        headers = credentials.headers
        if is_delegated(headers):
            return await self._delegated(headers["Authorization"], credentials)
        if credentials.peer is not None and self._x509 is not None:
            key = b"tls:" + hashlib.sha256(credentials.peer.leaf).digest()
            now = self._clock()
            principal = self._principals.get(key, now)
            if principal is None:
                login, expires = self._tls_login(credentials.peer)
                principal = await self._resolve(login)
                self._principals.put(key, principal, min(expires, now + self._principal_ttl))
            return principal
        if self._trusted_proxy is not None:
            forwarded = headers.get(self._trusted_proxy.cert_header)
            if forwarded:
                return await self._resolve(self._forwarded_login(credentials, forwarded))
        authorization = headers.get("Authorization")
        if authorization is None:
            raise self._no_credential
        if len(authorization) > self._max_header:
            raise HeaderTooLarge(f"Authorization header larger than {self._max_header} bytes")
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            key = b"bearer:" + hashlib.sha256(value.encode()).digest()
            now = self._clock()
            principal = self._principals.get(key, now)
            if principal is None:
                principal, lifetime = await self._bearer(value)
                self._principals.put(key, principal, now + min(lifetime, self._principal_ttl))
            return principal
        if scheme.lower() == "basic" and value:
            return await self._basic(value)
        if scheme.lower() in ("bearer", "basic"):
            raise CredentialRejected(f"empty {scheme} credential")
        raise CredentialRejected(f"unsupported Authorization scheme {scheme[:20]!r}")

    # --- X.509 ------------------------------------------------------------------

    def _cert_login(self, identity: CertIdentity) -> tuple[VerifiedLogin, float]:
        attrs = (
            self._voms.attributes(identity)
            if self._voms is not None and identity.proxy_depth
            else VomsAttributes()
        )
        expires = identity.not_after
        if attrs.not_after is not None:
            expires = min(expires, attrs.not_after)
        login = VerifiedLogin(
            identity=identity.dn,
            kind=IdentityKind.X509,
            method="x509",
            suggested_name=common_name(identity.end_entity.subject) or "user",
            display_name=common_name(identity.end_entity.subject) or "",
            groups=attrs.groups,
            admin_groups=attrs.admin_groups,
            fqans=attrs.fqans,
        )
        seconds_left = (expires - datetime.now(UTC)).total_seconds()
        return login, min(seconds_left, CERT_CACHE_SECONDS)

    def _tls_login(self, peer: PeerCertificates) -> tuple[VerifiedLogin, float]:
        """The verified login of a TLS peer and until when (clock) it may be cached."""
        assert self._x509 is not None
        key = hashlib.sha256(peer.leaf).digest()
        now = self._clock()
        cached = self._cert_cache.get(key, now)
        if cached is not None:
            return cached
        if peer.chain is None:
            raise CredentialRejected(
                "the TLS session was resumed and its certificate chain is no longer known; "
                "reconnect without session resumption"
            )
        try:
            chain = [x509.load_der_x509_certificate(c) for c in peer.chain]
        except ValueError as exc:
            raise CredentialRejected("unreadable client certificate") from exc
        settings = self._x509
        identity = identity_from_chain(
            chain,
            accept_proxies=settings.accept_proxies,
            accept_limited=settings.accept_limited,
            max_proxy_depth=settings.max_proxy_depth,
        )
        if settings.crl_policy is not CrlPolicy.STRICT:
            # Under "strict" the handshake checked every CRL already.
            settings.trust.check_revocation(
                chain, settings.crl_policy, is_proxy=[proxy_info(c) is not None for c in chain]
            )
        login, ttl = self._cert_login(identity)
        if ttl > 0:
            self._cert_cache.put(key, (login, now + ttl), now + ttl)
        return login, now + ttl

    def _forwarded_login(self, credentials: Credentials, leaf_header: str) -> VerifiedLogin:
        assert self._trusted_proxy is not None and self._chain_verifier is not None
        if not self._from_trusted_proxy(credentials.remote):
            raise CredentialRejected(
                "client certificate headers are accepted only from the trusted front proxy"
            )
        chain_header = (
            credentials.headers.get(self._trusted_proxy.chain_header, "")
            if self._trusted_proxy.chain_header
            else ""
        )
        if len(leaf_header) > self._max_header or len(chain_header) > MAX_CHAIN_HEADER:
            raise HeaderTooLarge("client certificate header too large")
        key = hashlib.sha256(leaf_header.encode() + b"\0" + chain_header.encode()).digest()
        now = self._clock()
        cached = self._cert_cache.get(key, now)
        if cached is not None:
            return cached[0]
        leaf_certs = parse_forwarded_certificates(leaf_header)
        extra = parse_forwarded_certificates(chain_header) if chain_header else []
        leaf = leaf_certs[0]
        leaf_der = leaf.public_bytes(Encoding.DER)
        # The chain header may repeat the leaf (some proxies send the full chain).
        rest = [c for c in (*leaf_certs[1:], *extra) if c.public_bytes(Encoding.DER) != leaf_der]
        identity = self._chain_verifier.verify(leaf, rest)
        login, ttl = self._cert_login(identity)
        if ttl > 0:
            self._cert_cache.put(key, (login, now + ttl), now + ttl)
        return login

    def _from_trusted_proxy(self, remote: str | None) -> bool:
        if remote is None:
            return False
        try:
            address = ip_address(remote)
        except ValueError:
            return False
        return any(address in network for network in self._proxy_networks)

    # --- bearer and basic ----------------------------------------------------------

    async def _bearer(self, token: str) -> tuple[Principal, float]:
        """The principal of a bearer token and how many seconds it may be cached."""
        static_error: CredentialRejected | None = None
        if self._tokens is not None:
            try:
                return self._tokens.authenticate(token), self._principal_ttl
            except CredentialRejected as exc:
                static_error = exc
        if self._oidc is not None and token.count(".") == 2:
            identity = await self._oidc.verify(token)
            principal = await self._resolve(
                VerifiedLogin(
                    identity=identity.identity,
                    kind=IdentityKind.OIDC,
                    method="oidc",
                    suggested_name=identity.username or identity.subject,
                    display_name=identity.username or "",
                    groups=identity.groups,
                    admin_groups=identity.admin_groups,
                )
            )
            return principal, identity.expires_at - time.time()
        if static_error is not None:
            raise static_error
        raise CredentialRejected("bearer tokens are not accepted by this service")

    async def _basic(self, value: str) -> Principal:
        if not self._passwords or self._accounts is None:
            raise CredentialRejected("password login is not enabled on this service")
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise CredentialRejected("malformed Basic credential") from exc
        username, sep, password = decoded.partition(":")
        if not sep or not username:
            raise CredentialRejected("malformed Basic credential")
        account = await asyncio.to_thread(self._accounts.verify_password, username, password)
        if not account.enabled:
            raise AccessDenied(f"account {account.name} is disabled")
        return self._principal(
            account,
            VerifiedLogin(
                identity=local_identity(account.name),
                kind=IdentityKind.LOCAL,
                method="password",
                suggested_name=account.name,
            ),
        )

    # --- delegation ---------------------------------------------------------------------

    async def _delegated(self, authorization: str, credentials: Credentials) -> Principal:
        """The principal of a broker's delegated request (never cached: one-use assertion)."""
        if self._delegation is None:
            raise CredentialRejected("this service does not accept delegated requests")
        if len(authorization) > self._max_header:
            raise HeaderTooLarge(f"Authorization header larger than {self._max_header} bytes")
        assertion = authorization.strip().partition(" ")[2].strip()
        if not assertion:
            raise CredentialRejected(f"empty {SCHEME} credential")
        delegation = self._delegation.check(
            assertion,
            method=credentials.method,
            target=credentials.target,
            body=credentials.body,
        )
        user = delegation.user
        kind = IdentityKind.FEDERATED
        if user.method in GLOBAL_METHODS:
            kind = IdentityKind(user.method)
        # A new account is named as a direct login would name it (the certificate's CN),
        # else as the broker names the user.
        cn = _dn_common_name(user.identity) if kind is IdentityKind.X509 else ""
        return await self._resolve(
            VerifiedLogin(
                identity=user.identity,
                kind=kind,
                method="delegated",
                suggested_name=cn or user.account,
                display_name=cn,
                groups=user.groups,
                fqans=user.fqans,
                via=delegation.broker,
            )
        )

    # --- accounts -------------------------------------------------------------------

    async def _resolve(self, login: VerifiedLogin) -> Principal:
        assert self._accounts is not None
        now = self._clock()
        account = self._account_cache.get(login.identity, now)
        if account is None:
            policy = self._registration
            register = (
                policy.auto
                and login.kind.value in policy.methods
                and (not policy.require_groups or bool(login.groups & set(policy.require_groups)))
            )
            account = await asyncio.to_thread(
                self._accounts.login,
                login.identity,
                login.kind,
                register=register,
                suggested_name=login.suggested_name,
                display_name=login.display_name,
                role=policy.default_role,
            )
            if account is None:
                raise AccessDenied(
                    f"{login.identity} has no account on this service and is not allowed to "
                    "register; ask a site admin to link it to an account"
                )
            if self._principal_ttl > 0:
                self._account_cache.put(login.identity, account, now + self._principal_ttl)
        if not account.enabled:
            raise AccessDenied(f"account {account.name} is disabled")
        return self._principal(account, login)

    @staticmethod
    def _principal(account: AccountPublic, login: VerifiedLogin) -> Principal:
        admin_groups = login.admin_groups | account.admin_groups
        roles = {Role.USER, account.role}
        if admin_groups:
            roles.add(Role.GROUP_ADMIN)
        return Principal(
            account=account.name,
            identity=login.identity,
            method=login.method,
            groups=login.groups | account.groups,
            roles=frozenset(roles),
            admin_groups=admin_groups,
            fqans=login.fqans,
            via=login.via,
        )

    def forget(self, identity: str | None = None) -> None:
        """Drop cached account lookups (of ``identity``, or all): changes apply at once."""
        self._principals.clear()
        if identity is None:
            self._account_cache.clear()
        else:
            self._account_cache.pop(identity)
