"""``/volumes`` on the broker: ownership kept by the broker, every operation forwarded.

Handlers parse and delegate to :class:`broker.volumes.service.VolumeService`;
the rules (placement, isolation, same-site attach) are there.
"""

from __future__ import annotations

from aiohttp import web

from auth.request import principal_of
from broker.api.common import broker, volume_id
from broker.volumes.models import (
    BrokerVmDisk,
    BrokerVolumeCreate,
    BrokerVolumeDeleted,
    BrokerVolumeList,
    BrokerVolumePublic,
    BrokerVolumeShowQuery,
)
from core.app import RouteSpec
from core.http import json_response, read_json, read_query
from core.idempotency import idempotency_key
from core.resources.volumes import VolumeAttach, VolumeDetach, VolumeListQuery, VolumeUpdate


async def create_volume(request: web.Request) -> web.Response:
    """POST /volumes: at ``site`` (or a chosen one); 202, also for a repeated Idempotency-Key."""
    principal = principal_of(request)
    body = await read_json(request, BrokerVolumeCreate)
    key = idempotency_key(request)
    volume = await broker(request).volumes.create(principal, body, key)
    return json_response(volume, status=202)


async def list_volumes(request: web.Request) -> web.Response:
    """GET /volumes: every site at once; ``partial`` + ``warnings`` when one does not answer."""
    query = read_query(request, VolumeListQuery)
    return json_response(await broker(request).volumes.list_volumes(principal_of(request), query))


async def show_volume(request: web.Request) -> web.Response:
    query = read_query(request, BrokerVolumeShowQuery)
    volume = await broker(request).volumes.get(
        principal_of(request),
        volume_id(request),
        wait=query.wait is not None,
        timeout=query.timeout,
    )
    return json_response(volume)


async def update_volume(request: web.Request) -> web.Response:
    volume = volume_id(request)
    body = await read_json(request, VolumeUpdate)
    return json_response(await broker(request).volumes.update(principal_of(request), volume, body))


async def delete_volume(request: web.Request) -> web.Response:
    volume = volume_id(request)
    return json_response(await broker(request).volumes.delete(principal_of(request), volume))


async def attach_volume(request: web.Request) -> web.Response:
    """POST /volumes/{id}/attach: the broker's VM id; VM and volume on the same site."""
    volume = volume_id(request)
    body = await read_json(request, VolumeAttach)
    return json_response(await broker(request).volumes.attach(principal_of(request), volume, body))


async def detach_volume(request: web.Request) -> web.Response:
    volume = volume_id(request)
    body = await read_json(request, VolumeDetach)
    return json_response(await broker(request).volumes.detach(principal_of(request), volume, body))


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
            request_model=VolumeAttach, response_model=BrokerVmDisk, tags=tags,
        ),
        RouteSpec(
            "POST", "/volumes/{volume_id}/detach", detach_volume, "Hot-unplug a volume from a VM",
            request_model=VolumeDetach, response_model=BrokerVmDisk, tags=tags,
        ),
    ]  # fmt: skip
