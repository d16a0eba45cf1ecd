"""Site-level resources: health, hosts (admin), quarantine (admin). Images: ``image_routes``."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from auth.principal import Principal
from auth.request import principal_of
from core.app import RouteSpec
from core.errors import Forbidden
from core.http import json_response
from site_agent.api.keys import CONFIG, HOSTS, QUARANTINE, VM_MANAGER
from site_agent.quarantine import QuarantineList


class Health(BaseModel):
    status: str
    site: str
    version: str


class HostPublic(BaseModel):
    uri: str
    available: bool
    accel: str | None
    cpus: int | None
    memory_mib: int | None
    used_vcpus: int
    used_memory_mib: int
    vms: int
    tags: list[str]


class HostList(BaseModel):
    hosts: list[HostPublic]


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("this operation needs the site-admin role")


async def health(request: web.Request) -> web.Response:
    """GET /health: public liveness probe."""
    from importlib.metadata import version

    return json_response(
        Health(
            status="ok", site=request.app[CONFIG].site.name, version=version("stratus-federation")
        )
    )


async def list_hosts(request: web.Request) -> web.Response:
    _require_admin(principal_of(request))
    usage = await request.app[VM_MANAGER].usage()
    hosts = []
    for uri, host in request.app[HOSTS].hosts.items():
        cpus, mem, count = usage.get(uri, (0, 0, 0))
        hosts.append(
            HostPublic(
                uri=uri,
                available=host.info is not None,
                accel=host.info.accel.value if host.info else None,
                cpus=host.info.cpus if host.info else None,
                memory_mib=host.info.memory_mib if host.info else None,
                used_vcpus=cpus,
                used_memory_mib=mem,
                vms=count,
                tags=list(host.config.tags),
            )
        )
    return json_response(HostList(hosts=hosts))


async def list_quarantine(request: web.Request) -> web.Response:
    _require_admin(principal_of(request))
    return json_response(QuarantineList(entries=await request.app[QUARANTINE].list_public()))


def routes() -> list[RouteSpec]:
    return [
        RouteSpec(
            "GET",
            "/health",
            health,
            "Liveness and version",
            response_model=Health,
            public=True,
            tags=("site",),
        ),
        RouteSpec(
            "GET",
            "/hosts",
            list_hosts,
            "Hypervisor hosts and their load (admin)",
            response_model=HostList,
            tags=("site",),
        ),
        RouteSpec(
            "GET",
            "/quarantine",
            list_quarantine,
            "Quarantined VM files (admin)",
            response_model=QuarantineList,
            tags=("site",),
        ),
    ]
