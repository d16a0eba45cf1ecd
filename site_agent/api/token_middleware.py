"""Interim authentication of the site API: bearer API tokens from the site config.

Every route not declared ``public`` needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

from aiohttp import web

from auth.errors import CredentialRejected
from auth.request import PRINCIPAL_KEY
from auth.tokens import TokenAuthenticator
from core.app import Handler, is_public
from core.errors import Unauthorized

MAX_AUTH_HEADER = 16 * 1024


def token_middleware(authenticator: TokenAuthenticator) -> web.middleware:  # type: ignore[valid-type]
    """A middleware that authenticates bearer tokens and stores the principal on the request."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_public(request):
            return await handler(request)
        header = request.headers.get("Authorization", "")
        if len(header) > MAX_AUTH_HEADER:
            raise Unauthorized("Authorization header too large")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("authentication required: send 'Authorization: Bearer <token>'")
        try:
            request[PRINCIPAL_KEY] = authenticator.authenticate(token.strip())
        except CredentialRejected as exc:
            raise Unauthorized(str(exc)) from exc
        return await handler(request)

    return middleware
