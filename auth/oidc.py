"""OIDC bearer tokens (JWT access or ID tokens) from several trusted issuers.

Verification of a token, in order (each failure is a ``CredentialRejected``
with a message naming what is wrong, never the token):

1. it parses as a JWS with a header and an ``iss`` claim naming a
   configured issuer ("token issuer ... is not trusted" otherwise);
2. its ``alg`` is one of RS256/RS384/RS512/ES256/ES384/PS256 and allowed for
   that issuer: ``none`` and every HMAC algorithm are refused outright, so a
   token "signed" with the issuer's public key as an HMAC secret (HS/RS
   confusion) never reaches a signature check;
3. the key: by ``kid`` in the issuer's JWKS. The discovery document
   (``<issuer>/.well-known/openid-configuration``, whose ``issuer`` must match
   exactly) and the JWKS are fetched on first use and cached
   (``jwks_ttl_seconds``). An unknown ``kid`` triggers one JWKS refresh (key
   rotation) at most every ``min_refresh_interval_seconds`` per issuer;
   within that interval an unknown kid is refused without any fetch. The key
   type must match the algorithm (RSA for RS*/PS*, EC P-256 for ES256, P-384
   for ES384); symmetric (``oct``) keys in a JWKS and RSA keys shorter than
   2048 bits are ignored;
4. signature, ``iss``, ``aud`` (one of the issuer's configured audiences),
   ``exp`` (required), ``nbf`` and ``iat``, with ``leeway_seconds``; ``sub``
   is required.

Verified tokens are cached by their SHA-256 until ``exp`` (at most
``token_cache_seconds``, LRU-bounded by ``token_cache_size``), so repeated
requests with the same token cost a hash and a dictionary lookup. A key
removed from the JWKS therefore stops a cached token only when that cache
entry ends.

Outbound HTTP goes through an :class:`IssuerSource`: :class:`HttpIssuerSource`
(``httpx.AsyncClient`` with an injectable transport) or
:class:`MemoryIssuerSource` (in-process fake for tests); both pass the same
contract tests. An issuer that cannot be reached while no key is cached
yields ``AuthUnavailable`` (503), not a 401.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from auth.config import ALLOWED_JWT_ALGORITHMS, OidcConfig, OidcIssuerConfig
from auth.errors import AuthUnavailable, CredentialRejected

log = logging.getLogger(__name__)

MAX_JWKS_KEYS = 64
MAX_DOCUMENT_BYTES = 1 << 20
_GROUP_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:@/+")

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


# --- issuer sources -----------------------------------------------------------


@dataclass(frozen=True)
class IssuerMetadata:
    """The parts of an OpenID Provider's discovery document that token checks need."""

    issuer: str
    jwks_uri: str


class IssuerSource(ABC):
    """Fetches discovery documents and key sets of OIDC issuers.

    Semantics every implementation keeps (checked by the contract tests):

    * :meth:`discover` returns metadata whose ``issuer`` equals the one asked
      for, or raises ``AuthUnavailable`` (unreachable, HTTP error, not JSON,
      issuer mismatch, missing ``jwks_uri``);
    * :meth:`jwks` returns the JSON object of the key set (with a ``keys``
      list) or raises ``AuthUnavailable``;
    * :meth:`aclose` releases connections and may be called more than once.
    """

    @abstractmethod
    async def discover(self, issuer: str) -> IssuerMetadata:
        """The discovery metadata of ``issuer``."""

    @abstractmethod
    async def jwks(self, metadata: IssuerMetadata) -> dict[str, Any]:
        """The current JSON Web Key Set of the issuer described by ``metadata``."""

    async def aclose(self) -> None:
        """Release resources (default: nothing to release)."""
        return None


def _check_url(url: str, what: str) -> None:
    parts = urlsplit(url)
    loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise AuthUnavailable(f"{what} {url!r} is not an https URL")


def _parse_metadata(issuer: str, document: Any) -> IssuerMetadata:
    if not isinstance(document, dict):
        raise AuthUnavailable(f"discovery document of {issuer} is not a JSON object")
    if document.get("issuer") != issuer:
        raise AuthUnavailable(f"discovery document of {issuer} names another issuer")
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str):
        raise AuthUnavailable(f"discovery document of {issuer} has no jwks_uri")
    _check_url(jwks_uri, "jwks_uri")
    return IssuerMetadata(issuer=issuer, jwks_uri=jwks_uri)


def _check_jwks(issuer: str, document: Any) -> dict[str, Any]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise AuthUnavailable(f"JWKS of {issuer} is not a key set")
    return document


class HttpIssuerSource(IssuerSource):
    """The real source: HTTPS GETs with ``httpx.AsyncClient`` (redirects not followed).

    ``transport`` is passed to the client (tests hand in a
    ``httpx.MockTransport`` or a transport bound to loopback).
    """

    def __init__(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 5.0,
    ) -> None:
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=timeout,
            follow_redirects=False,
            headers={"Accept": "application/json"},
        )

    async def _get_json(self, url: str, what: str) -> Any:
        try:
            response = await self._client.get(url)
        except httpx.HTTPError as exc:
            raise AuthUnavailable(
                f"cannot fetch the {what} ({url}): {exc.__class__.__name__}"
            ) from exc
        if response.status_code != 200:
            raise AuthUnavailable(f"fetching the {what} ({url}) gave HTTP {response.status_code}")
        if len(response.content) > MAX_DOCUMENT_BYTES:
            raise AuthUnavailable(f"the {what} ({url}) is too large")
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise AuthUnavailable(f"the {what} ({url}) is not JSON") from exc

    async def discover(self, issuer: str) -> IssuerMetadata:
        _check_url(issuer, "issuer")
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        return _parse_metadata(issuer, await self._get_json(url, "discovery document"))

    async def jwks(self, metadata: IssuerMetadata) -> dict[str, Any]:
        return _check_jwks(metadata.issuer, await self._get_json(metadata.jwks_uri, "JWKS"))

    async def aclose(self) -> None:
        await self._client.aclose()


@dataclass
class MemoryIssuerSource(IssuerSource):
    """An in-process fake: ``issuers`` maps an issuer to its JWKS document.

    ``fetches`` counts JWKS fetches per issuer; :meth:`set_jwks` rotates keys;
    ``reachable = False`` makes every call raise ``AuthUnavailable``.
    """

    issuers: dict[str, dict[str, Any]] = field(default_factory=dict)
    fetches: dict[str, int] = field(default_factory=dict)
    reachable: bool = True

    def set_jwks(self, issuer: str, jwks: dict[str, Any]) -> None:
        self.issuers[issuer] = jwks

    async def discover(self, issuer: str) -> IssuerMetadata:
        if not self.reachable or issuer not in self.issuers:
            raise AuthUnavailable(f"cannot fetch the discovery document of {issuer}")
        return IssuerMetadata(issuer=issuer, jwks_uri=issuer.rstrip("/") + "/jwks")

    async def jwks(self, metadata: IssuerMetadata) -> dict[str, Any]:
        if not self.reachable or metadata.issuer not in self.issuers:
            raise AuthUnavailable(f"cannot fetch the JWKS of {metadata.issuer}")
        self.fetches[metadata.issuer] = self.fetches.get(metadata.issuer, 0) + 1
        return _check_jwks(metadata.issuer, json.loads(json.dumps(self.issuers[metadata.issuer])))


# --- results and group mapping ------------------------------------------------


@dataclass(frozen=True)
class OidcIdentity:
    """What a verified token proves."""

    issuer: str
    subject: str
    username: str | None
    groups: frozenset[str]
    admin_groups: frozenset[str]
    expires_at: float

    @property
    def identity(self) -> str:
        """The identity key: ``sub@iss``."""
        return f"{self.subject}@{self.issuer}"


def _clean_group(name: str) -> str | None:
    name = name.strip().strip("/")
    if not name or len(name) > 200 or not set(name) <= _GROUP_CHARS or "//" in name:
        return None
    return name


def _with_ancestors(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def map_group_claims(
    claims: Mapping[str, Any], config: OidcIssuerConfig
) -> tuple[frozenset[str], frozenset[str]]:
    """``(groups, admin_groups)`` from the group claims of a verified token.

    Plain groups (``groups`` claim): ``/vo/sub`` gives ``vo`` and ``vo/sub``.
    AARC-G002 entitlements (``<namespace>:group:vo:sub[:role=r][#authority]``)
    give the same, and ``role`` in ``admin_roles`` makes the holder admin of
    the innermost group. Entitlements of other namespaces, and names with
    unexpected characters, are ignored. ``group_prefix`` is prepended.
    """
    groups: set[str] = set()
    admins: set[str] = set()
    namespace = (config.entitlement_namespace or "").rstrip(":")
    prefix = config.group_prefix
    for claim in config.groups_claims:
        value = claims.get(claim)
        values: Iterable[Any] = (
            [value] if isinstance(value, str) else value if isinstance(value, list) else []
        )
        for item in values:
            if not isinstance(item, str) or len(item) > 1024:
                continue
            if item.startswith("urn:"):
                if not namespace or not item.startswith(namespace + ":group:"):
                    continue
                body = item[len(namespace) + len(":group:") :].split("#", 1)[0]
                role = None
                parts = []
                for part in body.split(":"):
                    if part.startswith("role="):
                        role = unquote(part[5:])
                    else:
                        parts.append(unquote(part))
                path = _clean_group("/".join(parts))
                if path is None:
                    continue
                names = [prefix + p for p in _with_ancestors(path)]
                groups.update(names)
                if role is not None and role in config.admin_roles:
                    admins.add(names[-1])
            else:
                path = _clean_group(item)
                if path is not None:
                    groups.update(prefix + p for p in _with_ancestors(path))
    return frozenset(groups), frozenset(admins)


# --- the verifier -------------------------------------------------------------


@dataclass
class _IssuerState:
    config: OidcIssuerConfig
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    metadata: IssuerMetadata | None = None
    keys: dict[str, PublicKey] = field(default_factory=dict)
    anonymous_keys: list[PublicKey] = field(default_factory=list)
    fetched_at: float | None = None
    last_attempt: float | None = None


def _key_from_jwk(jwk: Mapping[str, Any]) -> PublicKey | None:
    if jwk.get("use", "sig") != "sig":
        return None
    kty = jwk.get("kty")
    public = {k: v for k, v in jwk.items() if k not in ("d", "p", "q", "dp", "dq", "qi", "oth")}
    try:
        if kty == "RSA":
            key = RSAAlgorithm.from_jwk(json.dumps(public))
            if isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048:
                return key
        elif kty == "EC":
            ec_key = ECAlgorithm.from_jwk(json.dumps(public))
            if isinstance(ec_key, ec.EllipticCurvePublicKey):
                return ec_key
    except (jwt.PyJWTError, ValueError, KeyError, TypeError):
        return None
    return None  # "oct" and unknown key types are never used


def key_matches_algorithm(key: PublicKey, algorithm: str) -> bool:
    """True if ``key`` is the right type (and curve) for ``algorithm``."""
    if algorithm.startswith(("RS", "PS")):
        return isinstance(key, rsa.RSAPublicKey)
    if algorithm == "ES256":
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    if algorithm == "ES384":
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
    return False


_JWT_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "token has expired"),
    (jwt.ImmatureSignatureError, "token is not yet valid"),
    (jwt.InvalidAudienceError, "token audience is not accepted by this service"),
    (jwt.InvalidIssuerError, "token issuer does not match"),
    (jwt.InvalidSignatureError, "token signature does not verify"),
    (jwt.InvalidIssuedAtError, "token has an invalid 'iat' claim"),
)


class OidcVerifier:
    """Verifies bearer JWTs against the configured issuers (see the module docstring).

    ``clock`` (monotonic seconds) drives JWKS caching and the refresh rate
    limit; ``wallclock`` (epoch seconds) drives the verified-token cache.
    Both are injectable for tests. Call :meth:`aclose` at shutdown.
    """

    def __init__(
        self,
        config: OidcConfig,
        source: IssuerSource | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._source = source or HttpIssuerSource(
            transport=transport, timeout=config.http_timeout_seconds
        )
        self._clock = clock
        self._wallclock = wallclock
        self._issuers = {i.issuer: _IssuerState(config=i) for i in config.issuers}
        self._cache: OrderedDict[bytes, OidcIdentity] = OrderedDict()

    @property
    def source(self) -> IssuerSource:
        return self._source

    async def aclose(self) -> None:
        await self._source.aclose()

    async def verify(self, token: str) -> OidcIdentity:
        """The identity ``token`` proves; else ``CredentialRejected`` or ``AuthUnavailable``."""
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._cache.get(digest)
        now = self._wallclock()
        if cached is not None:
            if cached.expires_at > now:
                self._cache.move_to_end(digest)
                return cached
            del self._cache[digest]
        identity = await self._verify_uncached(token)
        if self._config.token_cache_size > 0 and self._config.token_cache_seconds > 0:
            cache_until = min(identity.expires_at, now + self._config.token_cache_seconds)
            self._cache[digest] = OidcIdentity(
                issuer=identity.issuer,
                subject=identity.subject,
                username=identity.username,
                groups=identity.groups,
                admin_groups=identity.admin_groups,
                expires_at=cache_until,
            )
            while len(self._cache) > self._config.token_cache_size:
                self._cache.popitem(last=False)
        return identity

    async def _verify_uncached(self, token: str) -> OidcIdentity:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise CredentialRejected("bearer token is not a valid JWT") from exc
        issuer = unverified.get("iss")
        if not isinstance(issuer, str) or issuer not in self._issuers:
            shown = repr(issuer)[:120] if isinstance(issuer, str) else "(none)"
            raise CredentialRejected(f"token issuer {shown} is not trusted by this service")
        state = self._issuers[issuer]
        algorithm = header.get("alg")
        if algorithm not in ALLOWED_JWT_ALGORITHMS or algorithm not in state.config.algorithms:
            shown = repr(algorithm)[:20]
            raise CredentialRejected(f"token algorithm {shown} is not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise CredentialRejected("token header has an invalid 'kid'")
        key = await self._key_for(state, kid, algorithm)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=state.config.audience,
                issuer=issuer,
                leeway=self._config.leeway_seconds,
                options={"require": ["exp", "iss", "sub", "aud"]},
            )
        except jwt.MissingRequiredClaimError as exc:
            raise CredentialRejected(f"token lacks the '{exc.claim}' claim") from exc
        except jwt.PyJWTError as exc:
            for kind, message in _JWT_ERRORS:
                if isinstance(exc, kind):
                    raise CredentialRejected(message) from exc
            raise CredentialRejected("token is not valid") from exc
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject or len(subject) > 255:
            raise CredentialRejected("token has an invalid 'sub' claim")
        username = claims.get(state.config.username_claim)
        if not isinstance(username, str):
            email = claims.get("email")
            username = email.split("@", 1)[0] if isinstance(email, str) else None
        groups, admin_groups = map_group_claims(claims, state.config)
        return OidcIdentity(
            issuer=issuer,
            subject=subject,
            username=username,
            groups=groups,
            admin_groups=admin_groups,
            expires_at=float(claims["exp"]),
        )

    async def _key_for(self, state: _IssuerState, kid: str | None, algorithm: str) -> PublicKey:
        now = self._clock()
        if state.fetched_at is None or now - state.fetched_at > self._config.jwks_ttl_seconds:
            await self._refresh(state)
        if kid is not None and kid not in state.keys:
            # Unknown kid: perhaps the issuer rotated its keys. Refresh, rate-limited.
            await self._refresh(state)
            if kid not in state.keys:
                raise CredentialRejected(f"token signing key {kid[:64]!r} is unknown to its issuer")
        key = self._pick(state, kid, algorithm)
        if key is None:
            if kid is not None:
                raise CredentialRejected(
                    f"token algorithm {algorithm} does not match the type of key {kid[:64]!r}"
                )
            raise CredentialRejected(
                f"no single {algorithm} key of the issuer fits a token without kid"
            )
        return key

    def _pick(self, state: _IssuerState, kid: str | None, algorithm: str) -> PublicKey | None:
        if kid is not None:
            key = state.keys.get(kid)
            return key if key is not None and key_matches_algorithm(key, algorithm) else None
        candidates = [
            k
            for k in (*state.keys.values(), *state.anonymous_keys)
            if key_matches_algorithm(k, algorithm)
        ]
        return candidates[0] if len(candidates) == 1 else None

    async def _refresh(self, state: _IssuerState) -> None:
        """Fetch the JWKS (and discovery document) unless one was fetched too recently.

        At most one attempt per ``min_refresh_interval_seconds`` per issuer,
        successful or not. A failed refresh keeps the cached keys; with none
        cached it raises ``AuthUnavailable``.
        """
        issuer = state.config.issuer
        async with state.lock:
            now = self._clock()
            if (
                state.last_attempt is not None
                and now - state.last_attempt < self._config.min_refresh_interval_seconds
            ):
                if state.fetched_at is None:
                    raise AuthUnavailable(f"signing keys of {issuer} are unavailable; retry later")
                return
            state.last_attempt = now
            try:
                if state.metadata is None:
                    state.metadata = await self._source.discover(issuer)
                document = await self._source.jwks(state.metadata)
            except AuthUnavailable:
                if state.fetched_at is None:
                    raise
                log.warning("keeping the cached keys of %s: refresh failed", issuer)
                return
            keys: dict[str, PublicKey] = {}
            anonymous: list[PublicKey] = []
            for jwk in document["keys"][:MAX_JWKS_KEYS]:
                if not isinstance(jwk, dict):
                    continue
                key = _key_from_jwk(jwk)
                if key is None:
                    continue
                kid = jwk.get("kid")
                if isinstance(kid, str):
                    keys[kid] = key
                else:
                    anonymous.append(key)
            state.keys = keys
            state.anonymous_keys = anonymous
            state.fetched_at = now
            log.info("loaded %d signing key(s) of %s", len(keys) + len(anonymous), issuer)
