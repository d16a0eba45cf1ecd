"""The one place the broker turns domain errors into HTTP errors.

Broker errors (:mod:`broker.errors`: each carries its status and code),
federation errors (:func:`federation.errors.to_stratus_error`: a site's
refusal keeps the site's own 4xx status and code) and auth errors
(:func:`auth.errors.to_stratus_error`) become :class:`core.errors.StratusError`,
which :mod:`core.app`'s error middleware answers as the JSON error body
``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

from aiohttp import web

from auth.errors import AuthError
from auth.errors import to_stratus_error as auth_error
from broker.errors import BrokerError
from broker.errors import to_stratus_error as broker_error
from core.app import Handler
from federation.errors import FederationError
from federation.errors import to_stratus_error as federation_error


@web.middleware
async def broker_error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Re-raise broker, federation and auth errors as ``StratusError`` (module docstring)."""
    try:
        return await handler(request)
    except BrokerError as exc:
        raise broker_error(exc) from exc
    except FederationError as exc:
        raise federation_error(exc) from exc
    except AuthError as exc:
        raise auth_error(exc) from exc
