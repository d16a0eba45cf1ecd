"""Running the site agent: ``stratus serve site --config FILE``."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from aiohttp import web

from auth.middleware import AUTHENTICATOR
from core.app import SERVER_LIMITS
from site_agent.app import build_site_app
from site_agent.config import SiteConfig


async def serve(config: SiteConfig, *, ready_file: Path | None = None) -> None:
    """Serve until SIGINT/SIGTERM. With ``port = 0`` the chosen port is logged and,
    if ``ready_file`` is given, written there as ``http://host:port`` once listening."""
    app = build_site_app(config)
    runner = web.AppRunner(app, access_log=None, **SERVER_LIMITS)
    await runner.setup()
    # HTTPS (with client certificates and proxies) when [auth.x509] has a server certificate.
    ssl_context = app[AUTHENTICATOR].server_ssl_context()
    site = web.TCPSite(
        runner, config.site.listen_host, config.site.listen_port, ssl_context=ssl_context
    )
    await site.start()
    host, port = runner.addresses[0][:2]
    url = f"{'https' if ssl_context else 'http'}://{host}:{port}"
    logging.getLogger(__name__).info("site agent %s listening on %s", config.site.name, url)
    if ready_file is not None:
        ready_file.write_text(url + "\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
