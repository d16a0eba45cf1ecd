"""The broker application: config, database, authentication, providers and the broker.

Start-up order (``cleanup_ctx``): state directory and database; the one
HTTP client for calls to sites (a keep-alive pool shared by every site's
:class:`~federation.providers.site_api.SiteApi`) and the delegation signer
(the broker's ``[tls]`` certificate and key sign each call made for a user);
the public cloud providers; placer and site registry; the broker (restores
sites and the queue from the database), then its background tasks (site
staleness, the queue, the orphan sweep). Shutdown reverses it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Callable

import httpx
from aiohttp import web

from auth.authenticator import Authenticator
from auth.cadir import TrustStore
from auth.config import CrlPolicy
from auth.delegation import DelegationSigner
from auth.middleware import auth_middleware, install_authenticator
from auth.oidc import IssuerSource
from auth.routes import account_routes
from broker.api import disks, images, networks, sites, vms, volumes
from broker.api.keys import BROKER, CONFIG, SITE_TRUST
from broker.api.middleware import broker_error_middleware
from broker.config import BrokerConfig, SiteClientSection
from broker.runtime import Runtime
from broker.service import Broker
from broker.sites.registry import SiteFactory, SiteRegistry
from broker.sites.store import SiteStore
from broker.vms.store import VmStore
from broker.volumes.store import VolumeStore
from core.app import make_app
from core.db import create_tables, make_engine
from federation.placement import Placer
from federation.providers.base import ComputeProvider
from federation.providers.cloud import LibcloudProvider
from federation.providers.peer import PeerSiteProvider
from federation.providers.site_api import SiteApi

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


def default_clouds(config: BrokerConfig) -> dict[str, ComputeProvider]:
    """A :class:`LibcloudProvider` per ``[[clouds]]`` entry."""
    retry = config.broker.retry.policy()
    return {
        c.name: LibcloudProvider(
            c.public_cloud(), retry=retry, timeout=config.broker.site_timeout_seconds
        )
        for c in config.clouds
    }


def delegation_signer(config: BrokerConfig) -> DelegationSigner | None:
    """The signer of calls made for users: the broker's ``[tls]`` certificate and key.

    Without ``[tls]`` the broker cannot act for users at sites: its calls
    there are made with its own token only.
    """
    if config.tls is None:
        return None
    return DelegationSigner.from_files(
        broker=config.broker.name, cert=config.tls.cert, key=config.tls.key
    )


def site_factory(
    config: BrokerConfig, client: httpx.AsyncClient, signer: DelegationSigner | None
) -> SiteFactory:
    """How the registry makes a site's provider from its heartbeat's URL."""
    retry = config.broker.retry.policy()

    def make(name: str, base_url: str, token: str) -> ComputeProvider:
        api = SiteApi(name, client, base_url=base_url, token=token, signer=signer, retry=retry)
        return PeerSiteProvider(name, api, broker=config.broker.name)

    return make


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
            *vms.routes(),
            *disks.routes(),
            *volumes.routes(),
            *networks.routes(),
            *images.routes(),
            *sites.routes(),
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
        signer = delegation_signer(config)
        placer = Placer(
            config.ranking.weights(),
            max_candidates=config.broker.max_candidates,
            heartbeat_timeout=config.broker.heartbeat_timeout_seconds,
        )
        registry = SiteRegistry(
            config,
            placer,
            site_factory=site_factory(config, client, signer),
            clouds=(cloud_factory or default_clouds)(config),
        )
        runtime = Runtime(
            config=config,
            registry=registry,
            placer=placer,
            policy=config.burst_policy(),
            vms=VmStore(engine),
            volumes=VolumeStore(engine),
            sites=SiteStore(engine),
        )
        broker = Broker(runtime)
        await broker.start()
        app[BROKER] = broker
        broker.start_background()
        yield
        await broker.close()
        await registry.aclose()
        await client.aclose()
        engine.dispose()

    app.cleanup_ctx.append(context)
    return app
