"""Where the authenticated principal lives on an aiohttp request."""

from __future__ import annotations

from aiohttp import web

from auth.principal import Principal

PRINCIPAL_KEY: web.RequestKey[Principal] = web.RequestKey("stratus.principal", Principal)


def principal_of(request: web.Request) -> Principal:
    """The caller of ``request``, set by the auth middleware.

    A handler reached without authentication is a programming error (the
    route would have to be declared ``public``), hence ``RuntimeError``.
    """
    principal = request.get(PRINCIPAL_KEY)
    if principal is None:
        raise RuntimeError("no authenticated principal on this request")
    return principal
