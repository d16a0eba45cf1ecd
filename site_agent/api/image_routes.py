"""``/images``: register (by URL), list, show, delete.

Who may do what (docs/images.md): any user registers ``http(s)://`` images,
private to them; only site admins register ``file://`` URLs and public
images. Owners and site admins delete; an image in use cannot be deleted.
Image cache errors are answered by ``site_agent.api.errors``.
"""

from __future__ import annotations

import re

from aiohttp import web

from auth.request import principal_of
from core.app import RouteSpec
from core.errors import NotFound
from core.http import json_response, read_json
from core.resources.images import (
    IMAGE_NAME_PATTERN,
    ImageDeleted,
    ImageList,
    ImagePublic,
    ImageRegister,
)
from site_agent.api.keys import IMAGES

_NAME = re.compile(IMAGE_NAME_PATTERN)


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not _NAME.match(name):
        raise NotFound(f"no image named {name!r}")
    return name


async def register_image(request: web.Request) -> web.Response:
    """POST /images: 201 with the image in ``pending``; it is fetched on first use."""
    principal = principal_of(request)
    body = await read_json(request, ImageRegister)
    image = await request.app[IMAGES].register(principal, body)
    return json_response(image, status=201)


async def list_images(request: web.Request) -> web.Response:
    """GET /images: public images, the caller's own (every image for site admins)."""
    principal = principal_of(request)
    images = await request.app[IMAGES].list_for(principal)
    return json_response(ImageList(images=images))


async def show_image(request: web.Request) -> web.Response:
    principal = principal_of(request)
    image = await request.app[IMAGES].get_for(principal, _name(request))
    return json_response(image)


async def delete_image(request: web.Request) -> web.Response:
    """DELETE /images/{name}: 409 ``image_in_use`` while a VM or volume uses it."""
    principal = principal_of(request)
    deleted = await request.app[IMAGES].delete(principal, _name(request))
    return json_response(deleted)


def routes() -> list[RouteSpec]:
    tags = ("images",)
    return [
        RouteSpec(
            "GET",
            "/images",
            list_images,
            "Images the caller can boot, with cache state",
            response_model=ImageList,
            tags=tags,
        ),
        RouteSpec(
            "POST",
            "/images",
            register_image,
            "Register an image by URL (downloaded and verified on first use)",
            request_model=ImageRegister,
            response_model=ImagePublic,
            status=201,
            tags=tags,
        ),
        RouteSpec(
            "GET",
            "/images/{name}",
            show_image,
            "Show an image",
            response_model=ImagePublic,
            tags=tags,
        ),
        RouteSpec(
            "DELETE",
            "/images/{name}",
            delete_image,
            "Delete an image and its cached files (owner or site admin; 409 while in use)",
            response_model=ImageDeleted,
            tags=tags,
        ),
    ]
