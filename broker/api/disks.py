"""``/vms/{id}/disks`` on the broker: a VM's volumes and static disks, at its site.

Broker ids both ways: a volume to attach is the broker's id (it must be at
the VM's site); answers carry the broker's VM and volume ids and the site.
"""

from __future__ import annotations

import re

from aiohttp import web

from auth.request import principal_of
from broker.api.common import broker, vm_id
from broker.errors import NotFoundHere
from broker.volumes.models import BrokerVmDisk, BrokerVmDiskList
from core.app import RouteSpec
from core.http import json_response, read_json
from core.resources.volumes import DiskAttach

_DEVICE = re.compile(r"^vd[a-z]{1,2}$")


async def list_disks(request: web.Request) -> web.Response:
    """GET /vms/{id}/disks: the volumes and static disks plugged into the VM."""
    return json_response(
        await broker(request).operations.disks(principal_of(request), vm_id(request))
    )


async def attach_disk(request: web.Request) -> web.Response:
    """POST /vms/{id}/disks: hot-plug a volume (broker id) or a static disk (an image)."""
    vm = vm_id(request)
    body = await read_json(request, DiskAttach)
    return json_response(await broker(request).operations.attach(principal_of(request), vm, body))


async def detach_disk(request: web.Request) -> web.Response:
    """DELETE /vms/{id}/disks/{device}: hot-unplug the disk at that guest device."""
    vm = vm_id(request)
    device = request.match_info["device"]
    if not _DEVICE.match(device):
        raise NotFoundHere(f"no disk at device {device!r}")
    return json_response(await broker(request).operations.detach(principal_of(request), vm, device))


def routes() -> list[RouteSpec]:
    tags = ("vms",)
    return [
        RouteSpec(
            "GET", "/vms/{vm_id}/disks", list_disks,
            "Volumes and static disks plugged into a VM (broker ids)",
            response_model=BrokerVmDiskList, tags=tags,
        ),
        RouteSpec(
            "POST", "/vms/{vm_id}/disks", attach_disk,
            "Hot-plug a volume (of the VM's site) or a static disk into a running VM",
            request_model=DiskAttach, response_model=BrokerVmDisk, tags=tags,
        ),
        RouteSpec(
            "DELETE", "/vms/{vm_id}/disks/{device}", detach_disk,
            "Hot-unplug the disk at a guest device", response_model=BrokerVmDisk, tags=tags,
        ),
    ]  # fmt: skip
