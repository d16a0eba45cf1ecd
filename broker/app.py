"""The broker application: config, database, authentication, the site registry and the broker.

Start-up order (``cleanup_ctx``): state directory and database, the HTTP
client for site calls, placer, site registry (public cloud providers),
broker (restores sites and the queue from the database), the volume and
network services (``/volumes``, ``/networks``), then the monitor
(site staleness, queue) and the orphan sweeper tasks.  Shutdown reverses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Callable

import httpx
from aiohttp import web

from auth.authenticator import Authenticator
from auth.cadir import TrustStore
from auth.config import CrlPolicy
from auth.middleware import auth_middleware, install_authenticator
from auth.oidc import IssuerSource
from auth.routes import account_routes
from broker.api import network_routes, site_routes, vm_routes, volume_routes
from broker.api.keys import BROKER, CONFIG, NETWORKS, SITE_TRUST, VOLUMES
from broker.api.middleware import broker_error_middleware
from broker.config import BrokerConfig, SiteClientSection
from broker.networks import NetworkService
from broker.service import Broker
from broker.sites import SiteRegistry
from broker.store import BrokerStore
from broker.volumes import VolumeService
from core.app import make_app
from core.db import create_tables, make_engine
from federation.placement import Placer
from federation.providers.base import ComputeProvider

log = logging.getLogger(__name__)

CloudFactory = Callable[[BrokerConfig], dict[str, ComputeProvider]]


def site_client_ssl(section: SiteClientSection) -> ssl.SSLContext | bool:
    """How the broker verifies sites' HTTPS certificates (and its own client certificate)."""
    if section.ca_file is None and section.ca_dir is None and section.cert is None:
        return True
    context = ssl.create_default_context(
        cafile=str(section.ca_file) if section.ca_file else None,
        capath=str(section.ca_dir) if section.ca_dir else None,
    )
    if section.cert is not None and section.key is not None:
        context.load_cert_chain(str(section.cert), str(section.key))
    return context


def build_broker_app(
    config: BrokerConfig,
    *,
    site_transport: httpx.AsyncBaseTransport | None = None,
    cloud_factory: CloudFactory | None = None,
    oidc_source: IssuerSource | None = None,
) -> web.Application:
    """The broker app for ``config``.

    ``site_transport`` replaces the network for calls to sites and
    ``cloud_factory`` the public cloud providers (tests); ``oidc_source`` the
    OIDC issuers' HTTP access.
    """
    engine = make_engine(config.database_url)
    authenticator = Authenticator.from_config(config.auth, engine=engine, oidc_source=oidc_source)
    app = make_app(
        [
            *vm_routes.routes(),
            *volume_routes.routes(),
            *network_routes.routes(),
            *site_routes.routes(),
            *account_routes(),
        ],
        title=f"Stratus broker ({config.broker.name})",
        middlewares=[broker_error_middleware, auth_middleware(authenticator)],
    )
    install_authenticator(app, authenticator)
    app[CONFIG] = config
    if config.tls is not None and config.tls.crl_policy in (
        CrlPolicy.IF_PRESENT,
        CrlPolicy.BEST_EFFORT,
    ):
        app[SITE_TRUST] = TrustStore.load(config.tls.ca_dir)

    async def context(app: web.Application) -> AsyncIterator[None]:
        if config.broker.database_url is None:
            config.broker.state_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(create_tables, engine)
        client = httpx.AsyncClient(
            timeout=config.broker.site_timeout_seconds,
            verify=site_client_ssl(config.site_client),
            transport=site_transport,
        )
        placer = Placer(
            config.ranking.weights(),
            max_candidates=config.broker.max_candidates,
            heartbeat_timeout=config.broker.heartbeat_timeout_seconds,
        )
        registry = SiteRegistry(config, placer, client, cloud_factory=cloud_factory)
        broker = Broker(config, BrokerStore(engine), registry, placer, config.burst_policy())
        await broker.start()
        app[BROKER] = broker
        app[VOLUMES] = VolumeService(broker)
        app[NETWORKS] = NetworkService(broker)
        tasks = [asyncio.create_task(broker.run_monitor())]
        tasks.append(asyncio.create_task(broker.run_sweeper()))
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await broker.close()
        await registry.aclose()
        await client.aclose()
        engine.dispose()

    app.cleanup_ctx.append(context)
    return app
