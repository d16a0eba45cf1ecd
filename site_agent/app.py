"""The site agent application: wiring config, database, hosts and the VM manager.

Start-up order (``cleanup_ctx``): state directory and database, hypervisor
connections, image cache, address pools, volumes, VM manager, reconciliation
with the hypervisors, then the background tasks (quarantine sweeper,
monitor, and the heartbeats to the broker when ``[federation]`` is
configured). Shutdown reverses it.

Every domain error a handler lets through is answered by
``site_agent.api.errors.site_errors`` (one table). With ``[federation]`` the
site also accepts requests its broker makes on behalf of a user
(``Stratus-Delegation``, verified against the same CA and broker identity as
the heartbeats' TLS; see :func:`delegation_verifier`); without it such
requests get 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
from aiohttp import web

from auth.authenticator import Authenticator
from auth.delegation import DelegationVerifier
from auth.middleware import auth_middleware, install_authenticator
from auth.routes import account_routes
from core.app import make_app
from core.db import create_tables, make_engine
from site_agent.api import image_routes, network_routes, site_routes, vm_routes, volume_routes
from site_agent.api.errors import site_errors
from site_agent.api.keys import (
    CONFIG,
    ENGINE,
    HOSTS,
    IMAGE_HTTP_TRANSPORT,
    IMAGES,
    LAYOUT,
    NETWORKS,
    QUARANTINE,
    VM_MANAGER,
    VOLUMES,
)
from site_agent.capacity import CapacityReport
from site_agent.config import SiteConfig
from site_agent.federation_link import run_heartbeats
from site_agent.host_pool import HostPool
from site_agent.images.cache import ImageCache
from site_agent.images.fetcher import make_http_client
from site_agent.layout import StateLayout
from site_agent.networks.pools import NetworkPools
from site_agent.networks.repository import LeaseRepository
from site_agent.networks.service import NetworkService
from site_agent.quarantine import Quarantine
from site_agent.vms.lifecycle import VmManager
from site_agent.vms.repository import VmRepository
from site_agent.volumes.files import VolumeFiles
from site_agent.volumes.repository import VolumeRepository
from site_agent.volumes.service import VolumeService

log = logging.getLogger(__name__)


def delegation_verifier(config: SiteConfig) -> DelegationVerifier | None:
    """The verifier of the broker's delegated requests; None for a site without ``[federation]``.

    It trusts what the heartbeats trust: the CA ``[federation] ca`` (system
    CAs if unset), and as the broker's certificate the one with DN
    ``broker_dn``, else one valid for the host of ``broker_url``.
    """
    link = config.federation
    if link is None:
        return None
    return DelegationVerifier.for_site(
        site=config.site.name, ca=link.ca, broker_url=link.broker_url, broker_dn=link.broker_dn
    )


def build_site_app(
    config: SiteConfig,
    *,
    hosts: HostPool | None = None,
    image_transport: httpx.AsyncBaseTransport | None = None,
) -> web.Application:
    """The site agent app for ``config``.

    ``hosts`` may be given to inject drivers, ``image_transport`` to serve
    image downloads from a handler (tests).
    """
    engine = make_engine(config.database_url)
    # Reads the CA directory and vomsdir once; no SSL context or X509 store per request.
    authenticator = Authenticator.from_config(
        config.auth, engine=engine, delegation=delegation_verifier(config)
    )
    app = make_app(
        [
            *vm_routes.routes(),
            *image_routes.routes(),
            *site_routes.routes(),
            *volume_routes.routes(),
            *network_routes.routes(),
            *account_routes(),
        ],
        title=f"Stratus site agent ({config.site.name})",
        middlewares=[site_errors, auth_middleware(authenticator)],
    )
    install_authenticator(app, authenticator)
    app[CONFIG] = config
    app[ENGINE] = engine
    app[LAYOUT] = StateLayout(config.site.state_dir)
    if image_transport is not None:
        app[IMAGE_HTTP_TRANSPORT] = image_transport
    app[HOSTS] = hosts or HostPool.from_config(config.hosts)
    app.cleanup_ctx.append(_site_context)
    return app


async def _site_context(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    layout = app[LAYOUT]
    layout.prepare()
    engine = app[ENGINE]
    await asyncio.to_thread(create_tables, engine)
    hosts = app[HOSTS]
    await hosts.connect(owner=layout.instance_id())
    quarantine = Quarantine(engine, layout, config.quarantine.period_seconds)
    http = make_http_client(config.image_cache, app.get(IMAGE_HTTP_TRANSPORT))
    images = ImageCache(engine, layout, config.images, config.image_cache, http)
    vm_repo = VmRepository(engine)
    images.add_usage_source(vm_repo.images_in_use)
    await images.start()
    app[IMAGES] = images
    # Address pools: each managed pool's isolated network on every reachable host.
    networks = NetworkService(
        LeaseRepository(engine), NetworkPools(config.networks, layout.instance_id())
    )
    await networks.ensure_networks(h.driver for h in hosts.hosts.values() if h.info is not None)
    volume_files = VolumeFiles(layout.volumes_dir)
    await asyncio.to_thread(volume_files.prepare)
    volume_repo = VolumeRepository(engine)
    images.add_usage_source(volume_repo.images_in_use)
    volumes = VolumeService(
        volume_repo,
        volume_files,
        config.quotas,
        check_image=images.check_usable,
        image_files=images.ensure_cached,
    )
    await volumes.fail_interrupted()
    app[NETWORKS] = networks
    app[VOLUMES] = volumes
    manager = VmManager(
        vm_repo, hosts, images, layout, quarantine, config.vm, networks=networks, volumes=volumes
    )
    app[QUARANTINE] = quarantine
    app[VM_MANAGER] = manager
    actions = await manager.reconcile()
    log.info("start-up reconciliation: %d action(s)", len(actions))
    background = [
        asyncio.create_task(quarantine.run_sweeper(config.quarantine.sweep_interval_seconds)),
        asyncio.create_task(manager.run_monitor(config.vm.monitor_interval_seconds)),
    ]
    if config.federation is not None:
        capacity = CapacityReport(
            site=config.site.name,
            link=config.federation,
            hosts=hosts,
            usage=manager.usage,
            images=images,
            networks=networks,
        )
        background.append(asyncio.create_task(run_heartbeats(config.federation, capacity.report)))
    yield
    for task in background:
        task.cancel()
    for task in background:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await manager.close()
    await volumes.close()
    await images.close()
    await http.aclose()
    await hosts.close()
    engine.dispose()
