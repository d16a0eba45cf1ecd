"""aiohttp integration: the authentication middleware and where the principal lives.

Wiring in a service::

    authenticator = Authenticator.from_config(config.auth, engine=engine)
    app = make_app(routes, title="...", middlewares=[auth_middleware(authenticator)])
    install_authenticator(app, authenticator)       # app key + closing at shutdown
    ssl_context = authenticator.server_ssl_context()  # ONCE, for web.TCPSite(ssl_context=...)

For every route not declared ``public`` (:func:`core.app.is_public`) the
middleware authenticates the request and stores the
:class:`~auth.principal.Principal` under :data:`PRINCIPAL`; handlers read it
with :func:`principal_of`. Auth errors raised by the authenticator or by the
handler (``require_admin`` and friends) become JSON error bodies: 401 with a
``WWW-Authenticate`` header, 403, or 503; the message names the problem and
never contains the credential.

Delegated requests (``Authorization: Stratus-Delegation``, a broker acting
for a user, :mod:`auth.delegation`): the assertion is bound to the method,
the path and query as sent, and the SHA-256 of the body, so for that scheme
only (and only when the authenticator accepts delegation) the middleware
reads the body first (:func:`core.http.read_body`: bounded by the app's
``client_max_size``, 413 beyond; the bytes stay cached for the handler).

Header sizes: aiohttp refuses header lines above ``max_field_size`` (8190
bytes by default) with a 400 before any middleware runs. Tokens with many
group claims can be larger, so run the server with
``handler_args={"max_field_size": MAX_FIELD_SIZE}``; this middleware then
answers an ``Authorization`` header above ``max_authorization_header``
(16 KiB by default) with a clear 401.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace

from aiohttp import web
from aiohttp.typedefs import Middleware

from auth.authenticator import Authenticator
from auth.credentials import Credentials, credentials_from, is_delegated
from auth.errors import AuthError, to_stratus_error
from auth.principal import Principal
from auth.request import PRINCIPAL_KEY, principal_of
from core.app import Handler, is_public
from core.http import read_body

log = logging.getLogger(__name__)

PRINCIPAL: web.RequestKey[Principal] = PRINCIPAL_KEY
"""Request key of the authenticated principal (named ``"stratus.principal"``)."""

AUTHENTICATOR: web.AppKey[Authenticator] = web.AppKey("stratus.authenticator", Authenticator)

MAX_FIELD_SIZE = 32 * 1024
"""Recommended aiohttp ``max_field_size`` so that large tokens reach the middleware."""

__all__ = [
    "AUTHENTICATOR",
    "MAX_FIELD_SIZE",
    "PRINCIPAL",
    "auth_error_response",
    "auth_middleware",
    "install_authenticator",
    "principal_of",
]


def auth_error_response(exc: AuthError) -> web.Response:
    """The JSON error response for ``exc`` (401 responses carry ``WWW-Authenticate``)."""
    error = to_stratus_error(exc)
    headers = {"WWW-Authenticate": 'Bearer realm="stratus"'} if error.status == 401 else None
    return web.json_response(error.to_json(), status=error.status, headers=headers)


def auth_middleware(authenticator: Authenticator) -> Middleware:
    """A middleware that authenticates every non-public request with ``authenticator``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if not is_public(request):
                credentials = await _credentials(request, authenticator)
                request[PRINCIPAL] = await authenticator.authenticate(credentials)
            return await handler(request)
        except AuthError as exc:
            log.info(
                "auth refused %s %s from %s: %s: %s",
                request.method,
                request.path,
                request.remote,
                exc.__class__.__name__,
                exc,
            )
            return auth_error_response(exc)

    return middleware


async def _credentials(request: web.Request, authenticator: Authenticator) -> Credentials:
    credentials = credentials_from(request)
    if authenticator.accepts_delegation and is_delegated(request.headers):
        # Bounded by client_max_size (413), complete within BODY_SECONDS (400); aiohttp
        # caches the bytes, so the handler reads the same body again.
        credentials = replace(credentials, body=await read_body(request))
    return credentials


def install_authenticator(app: web.Application, authenticator: Authenticator) -> None:
    """Store ``authenticator`` under :data:`AUTHENTICATOR` and close it at app shutdown."""
    app[AUTHENTICATOR] = authenticator

    async def close_authenticator(_app: web.Application) -> AsyncIterator[None]:
        yield
        await authenticator.aclose()

    app.cleanup_ctx.append(close_authenticator)
