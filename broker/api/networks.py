"""``/networks`` on the broker: every site's address pools, aggregated (read-only)."""

from __future__ import annotations

import re

from aiohttp import web

from auth.request import principal_of
from broker.api.common import broker
from broker.errors import NetworkNotFound
from broker.networks.models import BrokerNetworkDetail, BrokerNetworkList, NetworkShowQuery
from core.app import RouteSpec
from core.http import json_response, read_query
from core.resources.networks import POOL_NAME_PATTERN

_POOL_NAME = re.compile(POOL_NAME_PATTERN)


async def list_networks(request: web.Request) -> web.Response:
    """GET /networks: the pools of every available site, each with its ``site``."""
    return json_response(await broker(request).networks.list_networks(principal_of(request)))


async def show_network(request: web.Request) -> web.Response:
    """GET /networks/{name}?site=: one pool and the caller's leases in it."""
    principal = principal_of(request)
    query = read_query(request, NetworkShowQuery)
    name = request.match_info["name"]
    if not _POOL_NAME.match(name):
        raise NetworkNotFound(f"no network {name!r}")
    return json_response(await broker(request).networks.show(principal, name, query.site))


def routes() -> list[RouteSpec]:
    tags = ("networks",)
    return [
        RouteSpec(
            "GET", "/networks", list_networks, "Address pools of every site (aggregated)",
            response_model=BrokerNetworkList, tags=tags,
        ),
        RouteSpec(
            "GET", "/networks/{name}", show_network,
            "One address pool (of ?site=, or of the only site having it) and your leases",
            response_model=BrokerNetworkDetail, query_model=NetworkShowQuery, tags=tags,
        ),
    ]  # fmt: skip
