"""Running an aiohttp service until SIGINT/SIGTERM: the loop every ``stratus serve`` uses."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from pathlib import Path

from aiohttp import web

from core.app import SERVER_LIMITS

log = logging.getLogger(__name__)


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
    runner = web.AppRunner(app, access_log=None, **SERVER_LIMITS)
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
