"""Running the site agent: ``stratus serve site --config FILE``."""

from __future__ import annotations

from pathlib import Path

from auth.middleware import AUTHENTICATOR
from core.server import serve_app
from site_agent.app import build_site_app
from site_agent.config import SiteConfig


async def serve(config: SiteConfig, *, ready_file: Path | None = None) -> None:
    """Serve the site agent until SIGINT/SIGTERM (see :func:`core.server.serve_app`).

    HTTPS (with client certificates and proxies) when ``[auth.x509]`` has a
    server certificate; the context is built once, at start-up.
    """
    app = build_site_app(config)
    await serve_app(
        app,
        host=config.site.listen_host,
        port=config.site.listen_port,
        ssl_context=app[AUTHENTICATOR].server_ssl_context(),
        label=f"site agent {config.site.name}",
        ready_file=ready_file,
    )
