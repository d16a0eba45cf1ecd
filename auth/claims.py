"""Reading a delegation assertion, which is untrusted until checked.

:func:`split_jws` parses the compact JWS form strictly (three base64url
segments without padding, JSON objects for header and claims) ONCE; the
signature is then checked by the verifier with PyJWT's algorithm objects.
(``jwt.decode`` would parse the token again with a per-character Python
check of the alphabet: about 170 µs for a 2.5 KB assertion that carries
its certificate chain, several times the cost of the RSA check.)

Small typed accessors refuse (``CredentialRejected`` starting
``delegated request refused:``) instead of returning something of the wrong
type; :func:`check_times` holds the time rules of
:class:`~auth.delegation.DelegationVerifier`. Messages name the claim that
is wrong and never echo more than a short excerpt of a value.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from auth.errors import CredentialRejected

MAX_TEXT = 1024  # an identity column holds 1024 characters
MAX_ITEMS = 1024  # groups or FQANs of one user
MAX_ITEM = 256
MAX_ASSERTION = 64 * 1024

_SEGMENT = re.compile(r"^[A-Za-z0-9_-]*$")


def refused(reason: str) -> CredentialRejected:
    """The error for a refused delegated request; ``reason`` says what was wrong."""
    return CredentialRejected(f"delegated request refused: {reason}")


def shown(value: object) -> str:
    """A short, safe rendering of a value taken from an assertion (for messages)."""
    return repr(value)[:80]


def number(claims: Mapping[str, Any], name: str) -> float:
    """The finite number ``claims[name]`` (a bool is not a number)."""
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise refused(f"the assertion has no valid '{name}' claim")
    return float(value)


def text(value: object, what: str, limit: int = MAX_TEXT) -> str:
    """``value`` as a non-empty printable string of at most ``limit`` characters."""
    if not isinstance(value, str) or not value:
        raise refused(f"the assertion names no {what}")
    if len(value) > limit or not value.isprintable():
        raise refused(f"the assertion's {what} is not valid")
    return value


def texts(value: object, what: str) -> list[str]:
    """``value`` as a list of strings (absent: empty), e.g. the user's groups."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise refused(f"the user's {what} are not a list of at most {MAX_ITEMS}")
    return [text(v, f"user's {what}", MAX_ITEM) for v in value]


def check_times(
    claims: Mapping[str, Any], now: float, *, skew: float, max_lifetime: float
) -> float:
    """Check ``iat``/``nbf``/``exp`` at ``now`` (Unix time) and return ``exp``.

    Accepted: ``exp + skew >= now``, ``nbf - skew <= now``, ``iat - skew <=
    now``, and a lifetime (``exp`` minus the earlier of ``iat``/``nbf``)
    above 0 and at most ``max_lifetime``.
    """
    issued, not_before, expires = (number(claims, n) for n in ("iat", "nbf", "exp"))
    if expires + skew < now:
        raise refused(f"the assertion expired {now - expires:.0f} s ago")
    if not_before - skew > now or issued - skew > now:
        raise refused("the assertion is not valid yet (check the broker's clock)")
    lifetime = expires - min(issued, not_before)
    if lifetime <= 0:
        raise refused("the assertion expires before it is issued")
    if lifetime > max_lifetime:
        raise refused(
            f"the assertion's lifetime ({lifetime:.0f} s) is longer than the "
            f"{max_lifetime:.0f} s this site accepts"
        )
    return expires


@dataclass(frozen=True)
class Jws:
    """A compact JWS, split and decoded but NOT verified."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def _segment(value: str, what: str) -> bytes:
    if len(value) % 4 == 1 or not _SEGMENT.match(value):
        raise refused(f"the assertion's {what} is not base64url")
    try:
        decoded = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise refused(f"the assertion's {what} is not base64url") from exc
    # One encoding per value: refuse non-zero trailing bits (no malleable tokens).
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != value.encode():
        raise refused(f"the assertion's {what} is not canonical base64url")
    return decoded


def _object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise refused(f"the assertion's {what} is not JSON") from exc
    if not isinstance(value, dict):
        raise refused(f"the assertion's {what} is not a JSON object")
    return value


def split_jws(assertion: str) -> Jws:
    """``header.claims.signature`` of a compact JWS, decoded (signature not checked)."""
    if len(assertion) > MAX_ASSERTION:
        raise refused("the assertion is too large")
    parts = assertion.split(".")
    if len(parts) != 3:
        raise refused("the assertion is not a JWT (three dot-separated parts)")
    header_b64, claims_b64, signature_b64 = parts
    return Jws(
        header=_object(_segment(header_b64, "header"), "header"),
        claims=_object(_segment(claims_b64, "payload"), "payload"),
        signing_input=f"{header_b64}.{claims_b64}".encode("ascii"),
        signature=_segment(signature_b64, "signature"),
    )
