"""``/networks``: the site's address pools, their use and (for admins) their leases."""

from __future__ import annotations

import re

from aiohttp import web

from auth.request import principal_of
from core.app import RouteSpec
from core.errors import NotFound
from core.http import json_response
from core.resources.networks import POOL_NAME_PATTERN, NetworkDetail, NetworkList
from site_agent.api.keys import NETWORKS

_POOL_NAME = re.compile(POOL_NAME_PATTERN)


async def list_networks(request: web.Request) -> web.Response:
    """GET /networks: every pool with its size and how many addresses are free."""
    principal_of(request)
    return json_response(NetworkList(networks=await request.app[NETWORKS].summaries()))


async def show_network(request: web.Request) -> web.Response:
    """GET /networks/{name}: one pool; admins see every lease, users their own."""
    principal = principal_of(request)
    name = request.match_info["name"]
    if not _POOL_NAME.match(name):
        raise NotFound(f"no network {name!r}")
    # An unknown pool is UnknownPool: 404 (site_agent.api.errors).
    return json_response(await request.app[NETWORKS].detail(principal, name))


def routes() -> list[RouteSpec]:
    tags = ("networks",)
    return [
        RouteSpec(
            "GET",
            "/networks",
            list_networks,
            "Address pools with size and free addresses",
            response_model=NetworkList,
            tags=tags,
        ),
        RouteSpec(
            "GET",
            "/networks/{name}",
            show_network,
            "One address pool and its leases (all for admins, your own otherwise)",
            response_model=NetworkDetail,
            tags=tags,
        ),
    ]
