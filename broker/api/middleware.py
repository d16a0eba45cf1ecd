"""Turning broker and federation errors into the JSON error bodies of :mod:`core.errors`."""

from __future__ import annotations

from aiohttp import web

from broker.errors import BrokerError
from broker.errors import to_stratus_error as broker_error
from core.app import Handler
from federation.errors import FederationError
from federation.errors import to_stratus_error as federation_error


@web.middleware
async def broker_error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Re-raise ``BrokerError``/``FederationError`` as ``StratusError`` for the error middleware."""
    try:
        return await handler(request)
    except BrokerError as exc:
        raise broker_error(exc) from exc
    except FederationError as exc:
        raise federation_error(exc) from exc
