"""``/volumes`` (persistent volumes) and ``/vms/{id}/disks`` (disks plugged into a VM).

Handlers only parse and delegate: the rules are in ``site_agent.volumes``
(service and attachments) and ``site_agent.vms.hotplug``; their errors are
answered by ``site_agent.api.errors``.
"""

from __future__ import annotations

import re
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from auth.delegation import BROKER_NAME
from auth.request import principal_of
from core.app import RouteSpec
from core.errors import NotFound
from core.http import json_response, read_json, read_query
from core.idempotency import idempotency_key
from core.resources.volumes import (
    DiskAttach,
    VmDisk,
    VmDiskList,
    VolumeAttach,
    VolumeCreate,
    VolumeDetach,
    VolumeList,
    VolumeListQuery,
    VolumePublic,
    VolumeUpdate,
)
from site_agent.api.keys import VM_MANAGER, VOLUMES

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_DEVICE = re.compile(r"^vd[a-z]{1,2}$")


class SiteVolumeListQuery(VolumeListQuery):
    """Query of the site's ``GET /volumes``: the shared one, plus ``via``."""

    via: str | None = Field(
        default=None,
        pattern=BROKER_NAME.pattern,
        description="only volumes this broker created for their owners (admins: with all=true, "
        "every owner's)",
    )


class VolumeShowQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    wait: Literal["ready"] | None = Field(
        default=None, description="wait until an image copy is finished (ready or failed)"
    )
    timeout: float = Field(default=60.0, gt=0, le=600)


class VolumeDeleted(BaseModel):
    id: str
    deleted: bool


def _volume_id(request: web.Request) -> str:
    volume_id = request.match_info["volume_id"]
    if not _UUID.match(volume_id):
        raise NotFound(f"no volume with id {volume_id!r}")
    return volume_id


def _vm_id(request: web.Request) -> str:
    vm_id = request.match_info["vm_id"]
    if not _UUID.match(vm_id):
        raise NotFound(f"no VM with id {vm_id!r}")
    return vm_id


async def list_volumes(request: web.Request) -> web.Response:
    """GET /volumes: your volumes and public ones; filters tag (regex), visibility, owner, via."""
    query = read_query(request, SiteVolumeListQuery)
    volumes = await request.app[VOLUMES].list_for(principal_of(request), query, via=query.via)
    return json_response(VolumeList(volumes=volumes))


async def create_volume(request: web.Request) -> web.Response:
    """POST /volumes: 202; ``ready`` at once, or ``creating`` while an image is copied.

    An ``Idempotency-Key`` makes a retried create return the same volume.
    """
    principal = principal_of(request)
    body = await read_json(request, VolumeCreate)
    volume = await request.app[VOLUMES].create(principal, body, idempotency_key(request))
    return json_response(volume, status=202)


async def show_volume(request: web.Request) -> web.Response:
    principal = principal_of(request)
    query = read_query(request, VolumeShowQuery)
    volume_id = _volume_id(request)
    volumes = request.app[VOLUMES]
    if query.wait is not None:
        await volumes.wait_ready(principal, volume_id, query.timeout)
    return json_response(await volumes.show(principal, volume_id))


async def update_volume(request: web.Request) -> web.Response:
    """PATCH /volumes/{id}: the owner changes tag and/or visibility."""
    principal = principal_of(request)
    volume_id = _volume_id(request)
    body = await read_json(request, VolumeUpdate)
    return json_response(await request.app[VOLUMES].update(principal, volume_id, body))


async def delete_volume(request: web.Request) -> web.Response:
    """DELETE /volumes/{id}: the owner deletes it (409 while attached or copied from)."""
    volume_id = _volume_id(request)
    await request.app[VOLUMES].delete(principal_of(request), volume_id)
    return json_response(VolumeDeleted(id=volume_id, deleted=True))


async def attach_volume(request: web.Request) -> web.Response:
    """POST /volumes/{id}/attach: hot-plug into a running VM; answers with the guest device."""
    principal = principal_of(request)
    volume_id = _volume_id(request)
    body = await read_json(request, VolumeAttach)
    disk = await request.app[VM_MANAGER].attach_disk(
        principal, body.vm_id, volume_id=volume_id, readonly=body.readonly
    )
    return json_response(disk)


async def detach_volume(request: web.Request) -> web.Response:
    """POST /volumes/{id}/detach: hot-unplug (409 ``not_attached`` if it is not attached)."""
    principal = principal_of(request)
    volume_id = _volume_id(request)
    body = await read_json(request, VolumeDetach)
    disk = await request.app[VM_MANAGER].detach_volume(principal, volume_id, body.vm_id)
    return json_response(disk)


async def list_vm_disks(request: web.Request) -> web.Response:
    vm_id = _vm_id(request)
    disks = await request.app[VM_MANAGER].disks(principal_of(request), vm_id)
    return json_response(VmDiskList(vm_id=vm_id, disks=disks))


async def attach_vm_disk(request: web.Request) -> web.Response:
    """POST /vms/{id}/disks: hot-plug a volume or a static disk (an image, read-only)."""
    principal = principal_of(request)
    vm_id = _vm_id(request)
    body = await read_json(request, DiskAttach)
    disk = await request.app[VM_MANAGER].attach_disk(
        principal, vm_id, volume_id=body.volume, image=body.static_disk, readonly=body.readonly
    )
    return json_response(disk)


async def detach_vm_disk(request: web.Request) -> web.Response:
    """DELETE /vms/{id}/disks/{device}: hot-unplug the disk at that guest device."""
    principal = principal_of(request)
    vm_id = _vm_id(request)
    device = request.match_info["device"]
    if not _DEVICE.match(device):
        raise NotFound(f"no disk {device!r}")
    disk = await request.app[VM_MANAGER].detach_disk(principal, vm_id, device=device)
    return json_response(disk)


def routes() -> list[RouteSpec]:
    tags = ("volumes",)
    return [
        RouteSpec(
            "GET",
            "/volumes",
            list_volumes,
            "List your volumes and public ones",
            response_model=VolumeList,
            query_model=SiteVolumeListQuery,
            tags=tags,
        ),
        RouteSpec(
            "POST",
            "/volumes",
            create_volume,
            "Create a volume: empty, copy-on-write of a volume, or from an image (202)",
            request_model=VolumeCreate,
            response_model=VolumePublic,
            status=202,
            tags=tags,
        ),
        RouteSpec(
            "GET",
            "/volumes/{volume_id}",
            show_volume,
            "Show a volume (optionally wait until an image copy is done)",
            response_model=VolumePublic,
            query_model=VolumeShowQuery,
            tags=tags,
        ),
        RouteSpec(
            "PATCH",
            "/volumes/{volume_id}",
            update_volume,
            "Change a volume's tag or visibility (owner)",
            request_model=VolumeUpdate,
            response_model=VolumePublic,
            tags=tags,
        ),
        RouteSpec(
            "DELETE",
            "/volumes/{volume_id}",
            delete_volume,
            "Delete a volume and its file (owner; not while attached)",
            response_model=VolumeDeleted,
            tags=tags,
        ),
        RouteSpec(
            "POST",
            "/volumes/{volume_id}/attach",
            attach_volume,
            "Hot-plug a volume into a running VM",
            request_model=VolumeAttach,
            response_model=VmDisk,
            tags=tags,
        ),
        RouteSpec(
            "POST",
            "/volumes/{volume_id}/detach",
            detach_volume,
            "Hot-unplug a volume from a VM",
            request_model=VolumeDetach,
            response_model=VmDisk,
            tags=tags,
        ),
        RouteSpec(
            "GET",
            "/vms/{vm_id}/disks",
            list_vm_disks,
            "Volumes and static disks plugged into a VM",
            response_model=VmDiskList,
            tags=("vms",),
        ),
        RouteSpec(
            "POST",
            "/vms/{vm_id}/disks",
            attach_vm_disk,
            "Hot-plug a volume or a static disk into a running VM",
            request_model=DiskAttach,
            response_model=VmDisk,
            tags=("vms",),
        ),
        RouteSpec(
            "DELETE",
            "/vms/{vm_id}/disks/{device}",
            detach_vm_disk,
            "Hot-unplug the disk at a guest device",
            response_model=VmDisk,
            tags=("vms",),
        ),
    ]
