"""Running the broker: ``stratus serve broker --config FILE``."""

from __future__ import annotations

import ssl
from pathlib import Path

from auth.tls import server_ssl_context
from broker.app import build_broker_app
from broker.config import BrokerConfig
from core.server import serve_app


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
    """Serve the broker until SIGINT/SIGTERM (see :func:`core.server.serve_app`)."""
    await serve_app(
        build_broker_app(config),
        host=config.broker.listen_host,
        port=config.broker.listen_port,
        ssl_context=listener_ssl(config),
        label=f"broker {config.broker.name}",
        ready_file=ready_file,
    )
