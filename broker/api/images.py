"""``/images`` on the broker: every site's images, registration at one or every site."""

from __future__ import annotations

import re

from aiohttp import web

from auth.request import principal_of
from broker.api.common import broker
from broker.errors import ImageNotFound
from broker.images.models import (
    BrokerImageDeleted,
    BrokerImageList,
    BrokerImagePublic,
    BrokerImageRegister,
    BrokerImageRegistered,
    ImageSiteQuery,
)
from core.app import RouteSpec
from core.http import json_response, read_json, read_query
from core.resources.images import IMAGE_NAME_PATTERN

_NAME = re.compile(IMAGE_NAME_PATTERN)


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not _NAME.match(name):
        raise ImageNotFound(f"no image {name!r}")
    return name


async def list_images(request: web.Request) -> web.Response:
    """GET /images: every site's images for the caller, each with the ``sites`` having it."""
    return json_response(await broker(request).images.list_images(principal_of(request)))


async def show_image(request: web.Request) -> web.Response:
    query = read_query(request, ImageSiteQuery)
    image = await broker(request).images.get(principal_of(request), _name(request), query.site)
    return json_response(image)


async def register_image(request: web.Request) -> web.Response:
    """POST /images: at ``site``, or at every available site that accepts it (``all_sites``)."""
    principal = principal_of(request)
    body = await read_json(request, BrokerImageRegister)
    return json_response(await broker(request).images.register(principal, body), status=201)


async def delete_image(request: web.Request) -> web.Response:
    query = read_query(request, ImageSiteQuery)
    name = _name(request)
    return json_response(
        await broker(request).images.delete(principal_of(request), name, query.site)
    )


def routes() -> list[RouteSpec]:
    tags = ("images",)
    return [
        RouteSpec(
            "GET", "/images", list_images,
            "Images of every site and cloud, each with the sites that have it",
            response_model=BrokerImageList, tags=tags,
        ),
        RouteSpec(
            "POST", "/images", register_image,
            "Register an image by URL at one site or at every site that accepts it",
            request_model=BrokerImageRegister, response_model=BrokerImageRegistered,
            status=201, tags=tags,
        ),
        RouteSpec(
            "GET", "/images/{name}", show_image, "Show an image (of ?site=, or of every site)",
            response_model=BrokerImagePublic, query_model=ImageSiteQuery, tags=tags,
        ),
        RouteSpec(
            "DELETE", "/images/{name}", delete_image,
            "Delete an image at ?site= (may be left out when one site has it)",
            response_model=BrokerImageDeleted, query_model=ImageSiteQuery, tags=tags,
        ),
    ]  # fmt: skip
