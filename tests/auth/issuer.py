"""A small OpenID Provider on 127.0.0.1 for the tests: discovery, a rotating JWKS, token minting."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass
class SigningKey:
    kid: str
    key: PrivateKey
    alg: str

    def jwk(self) -> dict[str, Any]:
        public = self.key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            data = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            data = ECAlgorithm.to_jwk(public, as_dict=True)
        return {**data, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def rsa_key(kid: str | None = None, alg: str = "RS256") -> SigningKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SigningKey(kid or uuid.uuid4().hex[:8], key, alg)


def ec_key(
    kid: str | None = None, curve: ec.EllipticCurve | None = None, alg: str = "ES256"
) -> SigningKey:
    key = ec.generate_private_key(curve or ec.SECP256R1())
    return SigningKey(kid or uuid.uuid4().hex[:8], key, alg)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TestIssuer:
    """Serves ``/.well-known/openid-configuration`` and ``/jwks``; counts JWKS fetches."""

    __test__ = False  # not a pytest test class

    keys: list[SigningKey] = field(default_factory=list)
    url: str = ""
    jwks_fetches: int = 0
    discovery_fetches: int = 0
    audience: str = "stratus"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        return app

    async def _discovery(self, _request: web.Request) -> web.Response:
        self.discovery_fetches += 1
        return web.json_response({"issuer": self.url, "jwks_uri": self.url + "/jwks"})

    async def _jwks(self, _request: web.Request) -> web.Response:
        self.jwks_fetches += 1
        return web.json_response({"keys": [k.jwk() for k in self.keys]})

    def rotate(self) -> SigningKey:
        """Replace every key by a new RSA key; returns it."""
        new = rsa_key()
        self.keys = [new]
        return new

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.url,
            "sub": "user-1234",
            "aud": self.audience,
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "preferred_username": "Jane.Doe",
            "groups": ["/escience/cloud", "ops"],
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(
        self, key: SigningKey | None = None, *, headers: dict[str, Any] | None = None, **claims: Any
    ) -> str:
        key = key or self.keys[0]
        return jwt.encode(
            self.claims(**claims),
            key.key,
            algorithm=key.alg,
            headers={"kid": key.kid, **(headers or {})},
        )


def unsigned_token(claims: dict[str, Any], kid: str | None = None) -> str:
    """``alg: none``: header.payload. (empty signature)."""
    header = {"alg": "none", "typ": "JWT", **({"kid": kid} if kid else {})}
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."


def hs256_token(claims: dict[str, Any], secret: bytes, kid: str | None = None) -> str:
    """A token "signed" with HS256 using ``secret`` (e.g. the issuer's RSA public key PEM)."""
    header = {"alg": "HS256", "typ": "JWT", **({"kid": kid} if kid else {})}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def tamper(token: str, **changes: Any) -> str:
    """The same signature over a modified payload."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"
