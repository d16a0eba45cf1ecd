"""The one place the broker turns errors into HTTP: broker, federation and auth errors."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from auth.errors import AccessDenied, CredentialRejected
from broker.api.middleware import broker_error_middleware
from broker.errors import (
    Ambiguous,
    InvalidOperation,
    NotPlaced,
    SiteUnreachable,
    UnknownSite,
    VmNotFound,
)
from core.app import RouteSpec, make_app
from core.idempotency import IdempotencyKeyReused
from federation.errors import OperationNotSupported, ProviderNotFound, SiteFailed, SiteRefused

CASES: list[tuple[Exception, int, str]] = [
    (UnknownSite("unknown site 'mars'", details={"known": ["a"]}), 404, "unknown_site"),
    (VmNotFound("no VM with id 'x'"), 404, "not_found"),
    (InvalidOperation("cannot stop a queued request"), 409, "invalid_operation"),
    (Ambiguous("two sites have it", code="ambiguous_image"), 409, "ambiguous_image"),
    (NotPlaced("no site", details={"sites": {}}), 409, "placement_failed"),
    (NotPlaced("failed", status=503, code="sites_unavailable"), 503, "sites_unavailable"),
    (SiteUnreachable("site a missed its heartbeats"), 503, "site_unreachable"),
    (SiteRefused("a", "no free address", status=409, code="no_address"), 409, "no_address"),
    (
        SiteRefused("a", "file:// is for site admins", status=403, code="forbidden"),
        403,
        "forbidden",
    ),
    (SiteFailed("a", "timeout after 3 attempts"), 503, "site_failed"),
    (ProviderNotFound("a", "no VM v1"), 404, "not_found"),
    (OperationNotSupported("aws", "disks"), 409, "not_supported"),
    (AccessDenied("account bob is disabled"), 403, "forbidden"),
    (CredentialRejected("bad token"), 401, "unauthorized"),
    (IdempotencyKeyReused("k"), 409, "idempotency_key_reused"),
]


@pytest.mark.parametrize(("error", "status", "code"), CASES)
async def test_each_error_becomes_its_status_and_code(
    aiohttp_client: Any, error: Exception, status: int, code: str
) -> None:
    async def fail(_request: web.Request) -> web.Response:
        raise error

    app = make_app(
        [RouteSpec("GET", "/fail", fail, "fails", public=True)],
        title="t",
        middlewares=[broker_error_middleware],
    )
    client = await aiohttp_client(app)
    response = await client.get("/api/v1/fail")
    assert response.status == status
    body = await response.json()
    assert body["error"]["code"] == code and body["error"]["message"]
    details = getattr(error, "details", None)
    if details is not None:
        assert body["error"]["details"] == details
