"""``/images``: register (by URL), list, show, delete; image cache errors -> HTTP errors.

Who may do what (docs/images.md): any user registers ``http(s)://`` images,
private to them; only site admins register ``file://`` URLs and public
images. Owners and site admins delete; an image in use cannot be deleted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from auth.request import principal_of
from core.app import RouteSpec
from core.errors import Conflict, Forbidden, NotFound, Unavailable, ValidationFailed
from core.http import json_response, read_json
from site_agent.api.keys import IMAGES
from site_agent.images.errors import (
    CacheFull,
    ImageBusy,
    ImageConfigured,
    ImageError,
    ImageForbidden,
    ImageInUse,
    ImageNameTaken,
    ImageNotFound,
    ImageNotUsable,
    ImageTooLarge,
    SourceRefused,
)
from site_agent.images.models import (
    IMAGE_NAME_PATTERN,
    ImageDeleted,
    ImageList,
    ImagePublic,
    ImageRegister,
)

_NAME = re.compile(IMAGE_NAME_PATTERN)


@contextmanager
def api_errors() -> Iterator[None]:
    """Translate image cache errors into the service's HTTP errors."""
    try:
        yield
    except ImageNotFound as exc:
        raise NotFound(str(exc)) from exc
    except ImageNameTaken as exc:
        raise Conflict(str(exc), code="image_exists") from exc
    except ImageForbidden as exc:
        raise Forbidden(str(exc)) from exc
    except (SourceRefused, ImageTooLarge) as exc:
        raise ValidationFailed(str(exc), details=[{"field": "url", "problem": str(exc)}]) from exc
    except ImageInUse as exc:
        raise Conflict(str(exc), code="image_in_use") from exc
    except ImageBusy as exc:
        raise Conflict(str(exc), code="image_busy") from exc
    except ImageConfigured as exc:
        raise Conflict(str(exc), code="image_configured") from exc
    except ImageNotUsable as exc:
        raise Conflict(str(exc), code="image_unavailable") from exc
    except CacheFull as exc:
        raise Unavailable(str(exc), code="image_cache_full") from exc
    except ImageError as exc:
        raise Conflict(str(exc), code="image_error") from exc


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not _NAME.match(name):
        raise NotFound(f"no image named {name!r}")
    return name


async def register_image(request: web.Request) -> web.Response:
    """POST /images: 201 with the image in ``pending``; it is fetched on first use."""
    principal = principal_of(request)
    body = await read_json(request, ImageRegister)
    with api_errors():
        image = await request.app[IMAGES].register(principal, body)
    return json_response(image, status=201)


async def list_images(request: web.Request) -> web.Response:
    """GET /images: public images, the caller's own (every image for site admins)."""
    principal = principal_of(request)
    images = await request.app[IMAGES].list_for(principal)
    return json_response(ImageList(images=images))


async def show_image(request: web.Request) -> web.Response:
    principal = principal_of(request)
    with api_errors():
        image = await request.app[IMAGES].get_for(principal, _name(request))
    return json_response(image)


async def delete_image(request: web.Request) -> web.Response:
    """DELETE /images/{name}: 409 ``image_in_use`` while a VM or volume uses it."""
    principal = principal_of(request)
    with api_errors():
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
