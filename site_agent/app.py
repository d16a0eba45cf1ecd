"""The site agent application: wiring config, database, hosts and the VM manager.

Start-up order (``cleanup_ctx``): state directory and database, hypervisor
connections, VM manager, reconciliation with the hypervisors, then the
background tasks (quarantine sweeper, monitor). Shutdown reverses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from auth.authenticator import Authenticator
from auth.middleware import auth_middleware, install_authenticator
from auth.routes import account_routes
from core.app import make_app
from core.db import create_tables, make_engine
from site_agent.api import site_routes, vm_routes
from site_agent.api.keys import CONFIG, ENGINE, HOSTS, IMAGES, LAYOUT, QUARANTINE, VM_MANAGER
from site_agent.config import SiteConfig
from site_agent.host_pool import HostPool
from site_agent.images.catalog import ImageCatalog
from site_agent.layout import StateLayout
from site_agent.quarantine import Quarantine
from site_agent.vms.lifecycle import VmManager
from site_agent.vms.repository import VmRepository

log = logging.getLogger(__name__)


def build_site_app(config: SiteConfig, *, hosts: HostPool | None = None) -> web.Application:
    """The site agent app for ``config``. ``hosts`` may be given to inject drivers (tests)."""
    engine = make_engine(config.database_url)
    # Reads the CA directory and vomsdir once; no SSL context or X509 store per request.
    authenticator = Authenticator.from_config(config.auth, engine=engine)
    app = make_app(
        [*vm_routes.routes(), *site_routes.routes(), *account_routes()],
        title=f"Stratus site agent ({config.site.name})",
        middlewares=[auth_middleware(authenticator)],
    )
    install_authenticator(app, authenticator)
    app[CONFIG] = config
    app[ENGINE] = engine
    app[LAYOUT] = StateLayout(config.site.state_dir)
    app[IMAGES] = ImageCatalog(config.images)
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
    manager = VmManager(VmRepository(engine), hosts, app[IMAGES], layout, quarantine, config.vm)
    app[QUARANTINE] = quarantine
    app[VM_MANAGER] = manager
    actions = await manager.reconcile()
    log.info("start-up reconciliation: %d action(s)", len(actions))
    background = [
        asyncio.create_task(quarantine.run_sweeper(config.quarantine.sweep_interval_seconds)),
        asyncio.create_task(manager.run_monitor(config.vm.monitor_interval_seconds)),
    ]
    yield
    for task in background:
        task.cancel()
    for task in background:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await manager.close()
    await hosts.close()
    engine.dispose()
