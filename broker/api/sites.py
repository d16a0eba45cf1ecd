"""``/sites`` (registry and heartbeats) and ``/health``."""

from __future__ import annotations

from importlib.metadata import version

from aiohttp import web

from auth.request import principal_of
from broker.api.common import broker
from broker.api.keys import CONFIG, SITE_TRUST
from broker.api.site_auth import check_site, peer_dn
from broker.sites.models import Health, SiteList, SitePublic
from core.app import RouteSpec
from core.errors import BadRequest
from core.http import json_response, read_json
from core.site_report import HeartbeatAck, SiteReport


async def health(request: web.Request) -> web.Response:
    """GET /health: public liveness probe, with how many sites are available."""
    registry = broker(request).rt.registry
    return json_response(
        Health(
            status="ok",
            broker=request.app[CONFIG].broker.name,
            version=version("stratus-federation"),
            sites_available=len(registry.available_sites()),
            sites_known=len(registry.site_names()),
        )
    )


async def list_sites(request: web.Request) -> web.Response:
    principal_of(request)
    return json_response(await broker(request).sites.sites())


async def show_site(request: web.Request) -> web.Response:
    principal_of(request)
    return json_response(await broker(request).sites.site(request.match_info["name"]))


async def heartbeat(request: web.Request) -> web.Response:
    """POST /sites/{name}/heartbeat: register or refresh a site (mutual TLS)."""
    name = request.match_info["name"]
    config = request.app[CONFIG]
    dn = peer_dn(
        request,
        trust=request.app.get(SITE_TRUST),
        crl_policy=config.tls.crl_policy if config.tls else None,
    )
    service = broker(request)
    check_site(name, dn, service.rt.registry.trusted(name))
    report = await read_json(request, SiteReport)
    if report.site != name:
        raise BadRequest(f"the report is for site {report.site!r}, the path names {name!r}")
    return json_response(await service.sites.heartbeat(name, report))


def routes() -> list[RouteSpec]:
    return [
        RouteSpec(
            "GET", "/health", health, "Liveness, version and available sites",
            response_model=Health, public=True, tags=("broker",),
        ),
        RouteSpec(
            "GET", "/sites", list_sites, "Sites and public clouds of the federation",
            response_model=SiteList, tags=("sites",),
        ),
        RouteSpec(
            "GET", "/sites/{name}", show_site, "One site or public cloud",
            response_model=SitePublic, tags=("sites",),
        ),
        RouteSpec(
            "POST", "/sites/{name}/heartbeat", heartbeat,
            "A site registers / reports its capacity (mutual TLS, site certificate)",
            request_model=SiteReport, response_model=HeartbeatAck, public=True, tags=("sites",),
        ),
    ]  # fmt: skip
