"""Running the broker: ``stratus serve broker --config FILE``."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from pathlib import Path

from aiohttp import web

from auth.tls import server_ssl_context
from broker.app import build_broker_app
from broker.config import BrokerConfig
from core.app import SERVER_LIMITS


def listener_ssl(config: BrokerConfig) -> ssl.SSLContext | None:
    """The HTTPS context of ``[tls]`` (built once), or None for plain HTTP.

    Client certificates are optional at the TLS level (users may log in with
    tokens) but one that is presented must verify against ``ca_dir``.
    """
    tls = config.tls
    if tls is None:
        return None
    return server_ssl_context(
        tls.cert,
        tls.key,
        tls.ca_dir,
        crl_policy=tls.crl_policy,
        allow_proxies=config.auth.x509.accept_proxies,
        require_client_cert=False,
    )


async def serve(config: BrokerConfig, *, ready_file: Path | None = None) -> None:
    """Serve until SIGINT/SIGTERM. With ``listen_port = 0`` the chosen port is logged and,
    if ``ready_file`` is given, written there as ``http(s)://host:port`` once listening."""
    app = build_broker_app(config)
    context = listener_ssl(config)
    runner = web.AppRunner(app, access_log=None, **SERVER_LIMITS)
    await runner.setup()
    site = web.TCPSite(
        runner, config.broker.listen_host, config.broker.listen_port, ssl_context=context
    )
    await site.start()
    host, port = runner.addresses[0][:2]
    url = f"{'https' if context else 'http'}://{host}:{port}"
    logging.getLogger(__name__).info("broker %s listening on %s", config.broker.name, url)
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
