"""Running an aiohttp service until SIGINT/SIGTERM: the loop every ``stratus serve`` uses."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from core.app import SERVER_LIMITS

log = logging.getLogger(__name__)


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering the errors it raises itself in the JSON shape.

    Requests aiohttp cannot parse (a header line over ``max_field_size``, a
    malformed request line or header, a broken chunked encoding) never reach
    the app's middlewares: aiohttp answers them from here, as ``text/plain``
    by default. Stratus answers every error as
    ``{"error": {"code", "message"}}``, so these too.
    """

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # The base logs the error and refuses when part of a response was already sent.
        super().handle_error(request, status, exc, message)
        if status >= 500:
            code = "timeout" if status == 504 else "internal_error"
            text = "internal error; see the service log" if status == 500 else "request timed out"
        elif isinstance(exc, LineTooLong):
            code, text = "header_too_large", f"request line or header too long: {_reason(exc)}"
        else:
            code = "bad_request"
            text = f"malformed HTTP request: {_reason(exc) if exc else message or status}"
        response = web.json_response({"error": {"code": code, "message": text}}, status=status)
        response.force_close()
        return response


def _reason(exc: BaseException) -> str:
    if isinstance(exc, HttpProcessingError) and exc.message:
        return str(exc.message).strip()
    return str(exc).strip() or type(exc).__name__


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class ServiceRunner(web.AppRunner):
    """The runner of every Stratus service: an ``AppRunner`` whose connections answer
    aiohttp's own errors in the JSON shape (:class:`JsonErrorRequestHandler`)."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(app, access_log=None, **{**SERVER_LIMITS, **kwargs})

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp builds its Server inside the app; only which handler class it makes
        # per connection changes (no state is added), hence the class swap.
        server.__class__ = _JsonErrorServer
        return server


async def serve_app(
    app: web.Application,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    label: str,
    ready_file: Path | None = None,
) -> None:
    """Serve ``app`` until SIGINT/SIGTERM, then clean it up.

    With ``port = 0`` the OS chooses; the URL (``http(s)://host:port``) is
    logged and, if ``ready_file`` is given, written there (atomically) once listening.
    """
    runner = ServiceRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    bound_host, bound_port = runner.addresses[0][:2]
    url = f"{'https' if ssl_context else 'http'}://{bound_host}:{bound_port}"
    log.info("%s listening on %s", label, url)
    if ready_file is not None:
        # Atomic: whoever waits for the file to exist must never read it half-written.
        partial = ready_file.with_name(ready_file.name + ".partial")
        partial.write_text(url + "\n")
        partial.replace(ready_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
