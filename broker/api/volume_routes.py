"""``/volumes`` on the broker: ownership kept by the broker, every operation forwarded.

Handlers parse and delegate to :class:`broker.volumes.VolumeService`; the
rules (placement, isolation, same-site attach) are there.
"""

from __future__ import annotations

import re

from aiohttp import web

from auth.request import principal_of
from broker.api.keys import VOLUMES
from broker.volumes import (
    BrokerVmDisk,
    BrokerVolumeAttach,
    BrokerVolumeCreate,
    BrokerVolumeDeleted,
    BrokerVolumeDetach,
    BrokerVolumeList,
    BrokerVolumePublic,
    BrokerVolumeShowQuery,
)
from core.app import RouteSpec
from core.errors import NotFound
from core.http import json_response, read_json, read_query
from core.idempotency import idempotency_key
from core.volume_request import VolumeListQuery, VolumeUpdate

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _volume_id(request: web.Request) -> str:
    volume_id = request.match_info["volume_id"]
    if not _UUID.match(volume_id):
        raise NotFound(f"no volume with id {volume_id!r}")
    return volume_id


async def create_volume(request: web.Request) -> web.Response:
    """POST /volumes: at ``site`` (or a chosen one); 202, also for a repeated Idempotency-Key."""
    principal = principal_of(request)
    body = await read_json(request, BrokerVolumeCreate)
    key = idempotency_key(request)
    volume, _ = await request.app[VOLUMES].create(principal, body, key)
    return json_response(volume, status=202)


async def list_volumes(request: web.Request) -> web.Response:
    """GET /volumes: every site at once; ``partial`` + ``warnings`` when one does not answer."""
    query = read_query(request, VolumeListQuery)
    return json_response(await request.app[VOLUMES].list_volumes(principal_of(request), query))


async def show_volume(request: web.Request) -> web.Response:
    query = read_query(request, BrokerVolumeShowQuery)
    volume = await request.app[VOLUMES].get(
        principal_of(request),
        _volume_id(request),
        wait=query.wait is not None,
        timeout=query.timeout,
    )
    return json_response(volume)


async def update_volume(request: web.Request) -> web.Response:
    volume_id = _volume_id(request)
    body = await read_json(request, VolumeUpdate)
    return json_response(await request.app[VOLUMES].update(principal_of(request), volume_id, body))


async def delete_volume(request: web.Request) -> web.Response:
    volume_id = _volume_id(request)
    return json_response(await request.app[VOLUMES].delete(principal_of(request), volume_id))


async def attach_volume(request: web.Request) -> web.Response:
    """POST /volumes/{id}/attach: the broker's VM id; VM and volume on the same site."""
    volume_id = _volume_id(request)
    body = await read_json(request, BrokerVolumeAttach)
    return json_response(await request.app[VOLUMES].attach(principal_of(request), volume_id, body))


async def detach_volume(request: web.Request) -> web.Response:
    volume_id = _volume_id(request)
    body = await read_json(request, BrokerVolumeDetach)
    return json_response(await request.app[VOLUMES].detach(principal_of(request), volume_id, body))


def routes() -> list[RouteSpec]:
    tags = ("volumes",)
    return [
        RouteSpec(
            "GET", "/volumes", list_volumes, "List your volumes on every site",
            response_model=BrokerVolumeList, query_model=VolumeListQuery, tags=tags,
        ),
        RouteSpec(
            "POST", "/volumes", create_volume,
            "Create a volume at a site (named, or chosen); 202; Idempotency-Key",
            request_model=BrokerVolumeCreate, response_model=BrokerVolumePublic, status=202,
            tags=tags,
        ),
        RouteSpec(
            "GET", "/volumes/{volume_id}", show_volume,
            "Show a volume (asked of its site; optionally wait for an image copy)",
            response_model=BrokerVolumePublic, query_model=BrokerVolumeShowQuery, tags=tags,
        ),
        RouteSpec(
            "PATCH", "/volumes/{volume_id}", update_volume, "Change a volume's tag or visibility",
            request_model=VolumeUpdate, response_model=BrokerVolumePublic, tags=tags,
        ),
        RouteSpec(
            "DELETE", "/volumes/{volume_id}", delete_volume, "Delete a volume at its site",
            response_model=BrokerVolumeDeleted, tags=tags,
        ),
        RouteSpec(
            "POST", "/volumes/{volume_id}/attach", attach_volume,
            "Hot-plug a volume into a running VM of the same site",
            request_model=BrokerVolumeAttach, response_model=BrokerVmDisk, tags=tags,
        ),
        RouteSpec(
            "POST", "/volumes/{volume_id}/detach", detach_volume, "Hot-unplug a volume from a VM",
            request_model=BrokerVolumeDetach, response_model=BrokerVmDisk, tags=tags,
        ),
    ]  # fmt: skip
