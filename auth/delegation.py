"""Delegation: a broker acting at a site on behalf of the user it authenticated.

Trust model (``docs/authentication.md``, "Across the federation"):

* the broker authenticates the user (X.509/proxy/VOMS, OIDC, password or
  token) and, for every call it makes at a site for that user, signs a
  short-lived assertion naming the user (:class:`DelegatedUser`), bound to
  that one request (HTTP method, path and query, SHA-256 of the body), for
  that one site (``aud``), with a unique id (``jti``);
* the broker signs with the key of its TLS certificate and puts the
  certificate chain in the assertion (``x5c``); the site verifies the chain
  against the CA it already trusts for its broker (``[federation] ca``) and
  that the certificate is the broker's (``[federation] broker_dn``, or else
  the host of ``[federation] broker_url``, checked as TLS would);
* the site refuses an assertion that is expired, not yet valid, replayed,
  for another site or another request, signed by another certificate, or
  that names no user; otherwise it resolves the user through its OWN account
  store and registration policy, so its ownership, authorisation and limits
  apply to the real user. A delegated user is never more than a user: the
  broker's own rights at the site are not passed on.

The assertion is a JWT (RFC 7519) signed ``RS256`` (RSA key) or ``ES256``
(EC P-256 key); never ``none``, never an HMAC. Header: ``alg``, ``typ``
``"JWT"``, ``x5c`` (the broker's chain, base64 DER, leaf first). Claims:
``iss`` (broker name), ``aud`` (site name), ``iat``/``nbf``/``exp``,
``jti``, ``htm`` (HTTP method), ``htu`` (path and query exactly as sent),
``bh`` (base64url SHA-256 of the body, also for an empty body) and ``usr``
(:class:`DelegatedUser` as ``{account, identity, method, groups, fqans}``).
:class:`DelegationSigner` makes them (the broker's site client),
:class:`DelegationVerifier` checks them (the site's
:class:`~auth.authenticator.Authenticator`).

Identities: a DN (``x509``) and ``sub@iss`` (``oidc``) mean the same person
everywhere and are passed as they are, so a user who also logs in at the
site directly is the same account there. An identity that only means
something at the broker (a local password or static token account) is
namespaced as ``federated:<broker>:<account>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from auth.broker_key import BrokerKey, BrokerKeys, PrivateKey, algorithm_for, system_trust
from auth.cache import ReplayCacheFull, SeenIds
from auth.cadir import TrustStore
from auth.claims import Jws, check_times, refused, shown, split_jws, text, texts
from auth.config import CrlPolicy
from auth.errors import AuthUnavailable
from auth.principal import Principal

#: ``Authorization: Stratus-Delegation <assertion>``: the scheme of a delegated call.
SCHEME = "Stratus-Delegation"

#: Login methods whose identity is global (the same person at every service).
GLOBAL_METHODS = frozenset({"x509", "oidc"})

#: How a user may have logged in at the broker. Not ``delegated``: a user the
#: broker itself received through delegation is never passed on again.
LOGIN_METHODS = frozenset({"x509", "oidc", "password", "token"})

#: Broker (issuer) names: they become part of identities, so no ``:``.
BROKER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")

#: The only signature algorithms, as PyJWT implements them (never none, never HMAC).
_ALGORITHMS = {
    "RS256": RSAAlgorithm(RSAAlgorithm.SHA256),
    "ES256": ECAlgorithm(ECAlgorithm.SHA256, ec.SECP256R1),
}

REPLAY_CACHE_SIZE = 200_000  # live jti's remembered at once (see SeenIds: never evicted early)


@dataclass(frozen=True)
class DelegatedUser:
    """The user a broker acts for, as the broker authenticated them.

    ``account``: the user's account name at the broker (for the record);
    ``identity``: what the site resolves to one of its accounts (see the
    module docstring); ``method``: how the user logged in at the broker;
    ``groups`` and ``fqans``: their groups/VOs and VOMS FQANs.
    """

    account: str
    identity: str
    method: str
    groups: frozenset[str] = field(default_factory=frozenset)
    fqans: tuple[str, ...] = ()

    @classmethod
    def of(cls, principal: Principal, *, broker: str) -> DelegatedUser:
        """The delegated form of an authenticated ``principal`` of broker ``broker``."""
        if principal.method in GLOBAL_METHODS:
            identity = principal.identity
        else:
            identity = f"federated:{broker}:{principal.account}"
        return cls(
            account=principal.account,
            identity=identity,
            method=principal.method,
            groups=frozenset(principal.groups),
            fqans=tuple(principal.fqans),
        )


def body_hash(body: bytes) -> str:
    """The ``bh`` claim: base64url (no padding) of the SHA-256 of ``body``."""
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()


def _user_claim(user: DelegatedUser) -> dict[str, Any]:
    return {
        "account": user.account,
        "identity": user.identity,
        "method": user.method,
        "groups": sorted(user.groups),
        "fqans": list(user.fqans),
    }


class DelegationSigner:
    """Signs delegation assertions for one broker (its name, certificate chain and key).

    ``chain`` is leaf first; the leaf must hold the public half of ``key``
    (RSA -> ``RS256``, EC P-256 -> ``ES256``). Every assertion lives
    ``lifetime`` seconds from ``clock()`` (Unix time) and has a fresh random
    ``jti``, so one must be made per request attempt (a retry included).
    """

    def __init__(
        self,
        *,
        broker: str,
        chain: list[x509.Certificate],
        key: PrivateKey,
        lifetime: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not BROKER_NAME.match(broker):
            raise ValueError(f"broker name {broker!r} must match {BROKER_NAME.pattern}")
        if not chain:
            raise ValueError("the broker's certificate chain is empty")
        if not 0 < lifetime <= 3600:
            raise ValueError("the assertion lifetime must be between 0 and 3600 seconds")
        self._algorithm = algorithm_for(key)
        if chain[0].public_key() != key.public_key():
            raise ValueError("the key does not belong to the first certificate of the chain")
        self.broker = broker
        self._key = key
        self._lifetime = lifetime
        self._clock = clock
        self._headers = {
            "typ": "JWT",
            "x5c": [base64.b64encode(c.public_bytes(Encoding.DER)).decode() for c in chain],
        }

    @classmethod
    def from_files(
        cls, *, broker: str, cert: Path, key: Path, lifetime: float = 60.0
    ) -> DelegationSigner:
        """A signer from PEM files: ``cert`` (leaf first, maybe with its chain), ``key`` (clear)."""
        chain = x509.load_pem_x509_certificates(cert.read_bytes())
        private = load_pem_private_key(key.read_bytes(), password=None)
        if not isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key}: only RSA and EC P-256 keys can sign delegation assertions")
        return cls(broker=broker, chain=chain, key=private, lifetime=lifetime)

    def authorization(
        self, user: DelegatedUser, *, audience: str, method: str, target: str, body: bytes
    ) -> str:
        """The ``Authorization`` header value for one request made for ``user`` at ``audience``.

        ``target`` is the path and query exactly as sent on the request line
        (httpx: ``request.url.raw_path.decode()``); ``body`` the exact bytes.
        """
        now = int(self._clock())
        claims = {
            "iss": self.broker,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + math.ceil(self._lifetime),
            "jti": secrets.token_urlsafe(18),
            "htm": method.upper(),
            "htu": target,
            "bh": body_hash(body),
            "usr": _user_claim(user),
        }
        token = jwt.encode(claims, self._key, algorithm=self._algorithm, headers=self._headers)
        return f"{SCHEME} {token}"


@dataclass(frozen=True)
class Delegation:
    """A verified assertion: ``broker`` (``iss``) acts for ``user`` until ``expires_at``."""

    broker: str
    user: DelegatedUser
    jti: str
    expires_at: float
    certificate_dn: str


def parse_user(claim: object, *, broker: str) -> DelegatedUser:
    """The ``usr`` claim of an assertion issued by ``broker``, checked.

    The identity must fit the method, so that a broker can only name a user
    as the site would see them log in: a DN (``/...``) for ``x509``,
    ``sub@iss`` for ``oidc``, and exactly ``federated:<broker>:<account>``
    for any other login method (never ``local:...`` nor another broker's).
    """
    if not isinstance(claim, dict):
        raise refused("the assertion names no user")
    account = text(claim.get("account"), "user account", 64)
    identity = text(claim.get("identity"), "user identity")
    method = claim.get("method")
    if not isinstance(method, str) or method not in LOGIN_METHODS:
        raise refused(
            f"the user's login method {shown(method)} is not one of {sorted(LOGIN_METHODS)} "
            "(a delegated user is never delegated again)"
        )
    if method == "x509":
        valid = identity.startswith("/") and "=" in identity
    elif method == "oidc":
        valid = "@" in identity and not identity.startswith(("/", "local:", "federated:"))
    else:
        valid = identity == f"federated:{broker}:{account}"
    if not valid:
        raise refused(f"identity {shown(identity)} does not fit login method {method!r}")
    return DelegatedUser(
        account=account,
        identity=identity,
        method=method,
        groups=frozenset(texts(claim.get("groups"), "groups")),
        fqans=tuple(texts(claim.get("fqans"), "fqans")),
    )


class DelegationVerifier:
    """Checks the delegation assertions a site receives (module docstring: trust model).

    ``trust``/``crl_policy``: the CAs (and CRLs) the broker's chain must
    verify against; proxies are refused. The certificate must be the
    broker's: its subject DN equals ``broker_dn`` (grid ``/A=b`` or RFC 4514
    form) when given, else it is valid for ``broker_host`` as TLS would
    decide (:mod:`auth.hostname`). ``max_skew`` seconds of clock difference
    are tolerated on ``iat``/``nbf``/``exp``; an assertion may live at most
    ``max_lifetime`` seconds. Each ``jti`` is accepted once, remembered
    until ``exp + max_skew``.

    Cost: a verified broker chain is cached by the SHA-256 of its leaf until
    the certificate expires (at most
    :data:`auth.broker_key.CHAIN_CACHE_SECONDS`), so a warm verification is
    one decode, one signature check and the claim checks. Refusals are never
    cached.
    """

    def __init__(
        self,
        *,
        site: str,
        trust: TrustStore,
        crl_policy: CrlPolicy,
        broker_dn: str | None = None,
        broker_host: str | None = None,
        max_skew: float = 30.0,
        max_lifetime: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_skew < 0 or max_lifetime <= 0:
            raise ValueError("max_skew must be >= 0 and max_lifetime > 0")
        self.site = site
        self._keys = BrokerKeys(
            trust=trust,
            crl_policy=crl_policy,
            broker_dn=broker_dn,
            broker_host=broker_host,
            max_skew=max_skew,
            clock=clock,
        )
        self._skew = max_skew
        self._max_lifetime = max_lifetime
        self._clock = clock
        self._seen = SeenIds(REPLAY_CACHE_SIZE)

    @classmethod
    def for_site(
        cls,
        *,
        site: str,
        ca: Path | None,
        broker_url: str,
        broker_dn: str | None,
        crl_policy: CrlPolicy = CrlPolicy.IF_PRESENT,
    ) -> DelegationVerifier:
        """The verifier for a site's ``[federation]`` section.

        ``ca``: a PEM bundle or a hashed CA directory (with its ``.r0`` CRLs),
        read once; None means the system's default CAs, as for the heartbeat's
        TLS. ``broker_dn`` when set, else the host of ``broker_url``, says
        which certificate is the broker's.
        """
        trust = TrustStore.load_path(ca) if ca is not None else system_trust()
        host = urlsplit(broker_url).hostname
        if not broker_dn and not host:
            raise ValueError(f"broker_url {broker_url!r} has no host name")
        return cls(
            site=site, trust=trust, crl_policy=crl_policy, broker_dn=broker_dn, broker_host=host
        )

    def verify(self, assertion: str, *, method: str, target: str, body: bytes) -> DelegatedUser:
        """The user ``assertion`` names, if it is valid for this request (see :meth:`check`)."""
        return self.check(assertion, method=method, target=target, body=body).user

    def check(self, assertion: str, *, method: str, target: str, body: bytes) -> Delegation:
        """Verify ``assertion`` for the request ``method target`` with ``body``.

        Raises ``CredentialRejected`` naming what was wrong (never echoing
        the assertion), or ``AuthUnavailable`` when the replay cache is full.
        The ``jti`` is recorded only when everything else is right.
        """
        jws = split_jws(assertion)
        broker_key = self._keys.key_for(self._x5c(jws.header))
        self._check_signature(jws, broker_key)
        claims = jws.claims
        now = self._clock()
        expires = check_times(claims, now, skew=self._skew, max_lifetime=self._max_lifetime)
        audience = claims.get("aud")
        if audience != self.site:
            raise refused(f"the assertion is for site {shown(audience)}, not for {self.site!r}")
        broker = claims.get("iss")
        if not isinstance(broker, str) or not BROKER_NAME.match(broker):
            raise refused("the assertion has no valid 'iss' (broker name)")
        if claims.get("htm") != method.upper():
            raise refused(f"the assertion is for another HTTP method than {method.upper()}")
        if claims.get("htu") != target:
            raise refused("the assertion is for another path or query than this request's")
        bh = claims.get("bh")
        if not isinstance(bh, str) or not hmac.compare_digest(bh, body_hash(body)):
            raise refused("the request body does not match the assertion's body hash")
        user = parse_user(claims.get("usr"), broker=broker)
        jti = text(claims.get("jti"), "jti (assertion id)", 128)
        try:
            first = self._seen.first_use((broker, jti), expires + self._skew, now)
        except ReplayCacheFull as exc:
            raise AuthUnavailable(
                "too many delegated requests in flight; retry in a few seconds"
            ) from exc
        if not first:
            raise refused(f"assertion {shown(jti)} was already used (replayed)")
        return Delegation(
            broker=broker, user=user, jti=jti, expires_at=expires, certificate_dn=broker_key.dn
        )

    # --- steps ------------------------------------------------------------------

    @staticmethod
    def _x5c(header: Mapping[str, Any]) -> object:
        """The ``x5c`` of a header that names an accepted algorithm and type."""
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in _ALGORITHMS:
            raise refused(f"algorithm {shown(algorithm)} is not accepted (RS256 or ES256 only)")
        if header.get("typ") != "JWT":
            raise refused("the assertion's header type is not 'JWT'")
        if "crit" in header:
            raise refused("the assertion has critical header parameters this site does not know")
        return header.get("x5c")

    @staticmethod
    def _check_signature(jws: Jws, broker_key: BrokerKey) -> None:
        algorithm = jws.header["alg"]
        if algorithm != broker_key.algorithm:
            raise refused(
                f"signed with {algorithm} but the key of {broker_key.dn} needs "
                f"{broker_key.algorithm}"
            )
        if not _ALGORITHMS[algorithm].verify(jws.signing_input, broker_key.key, jws.signature):
            raise refused(f"the signature does not verify with the certificate of {broker_key.dn}")
