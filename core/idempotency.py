"""``Idempotency-Key`` handling shared by every create endpoint.

A create repeated with the same key (per account) returns what the first
request made and makes nothing new; the same key with a different body is a
409. Services store ``(owner, key, request_hash(body), resource ids)`` in the
same transaction as the resources they create.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from aiohttp import web

from core.errors import BadRequest, Conflict

HEADER = "Idempotency-Key"
_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def idempotency_key(request: web.Request) -> str | None:
    """The request's ``Idempotency-Key``, if any; ``BadRequest`` when malformed."""
    key = request.headers.get(HEADER)
    if key is not None and not _KEY.match(key):
        raise BadRequest(f"{HEADER} must be 1-128 characters of [A-Za-z0-9._:-]")
    return key


def request_hash(body: dict[str, Any]) -> str:
    """A stable hash of a create request's body, to recognise retries."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def key_reused(key: str) -> Conflict:
    """The error for a key seen before with a different request body."""
    return Conflict(
        f"{HEADER} {key!r} was already used with a different request body",
        code="idempotency_key_reused",
    )
