"""``/vms`` on the broker: the site API's operations, forwarded to the VM's site or cloud."""

from __future__ import annotations

import re

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from auth.request import principal_of
from broker.api.keys import BROKER
from broker.errors import VmNotFound
from broker.models import (
    BrokerVmCreate,
    BrokerVmEventList,
    BrokerVmList,
    BrokerVmPublic,
    ConsoleOutput,
)
from core.app import RouteSpec
from core.http import json_response, read_json, read_query
from core.idempotency import idempotency_key
from core.vm_request import VmListQuery, VmShowQuery

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class SaveAs(BaseModel):
    """``save`` of a stop: keep the root disk as a new image at the VM's site."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    description: str = Field(default="", max_length=1024)


class StopRequest(BaseModel):
    """Optional body of ``POST /vms/{id}/stop`` (forwarded to the site)."""

    model_config = ConfigDict(extra="forbid")
    save: SaveAs | None = None


class KillQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    force: bool = Field(default=False, description="kill even if a save as image is pending")


class ConsoleQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tail: int = Field(default=65536, ge=1, le=4 * 1024 * 1024, description="bytes from the end")


def _vm_id(request: web.Request) -> str:
    vm_id = request.match_info["vm_id"]
    if not _UUID.match(vm_id):
        raise VmNotFound(f"no VM with id {vm_id!r}")
    return vm_id


async def create_vms(request: web.Request) -> web.Response:
    """POST /vms: place, burst or queue; 202 with the VMs (``queued`` ones included)."""
    principal = principal_of(request)
    body = await read_json(request, BrokerVmCreate)
    key = idempotency_key(request)
    vms = await request.app[BROKER].create(principal, body, key)
    return json_response(BrokerVmList(vms=vms), status=202)


async def list_vms(request: web.Request) -> web.Response:
    """GET /vms: every site and cloud asked at once; ``partial`` + ``warnings`` if one is down."""
    query = read_query(request, VmListQuery)
    listing = await request.app[BROKER].list_vms(
        principal_of(request), every_owner=query.all, include_done=query.include_done
    )
    return json_response(listing)


async def show_vm(request: web.Request) -> web.Response:
    query = read_query(request, VmShowQuery)
    vm = await request.app[BROKER].get(
        principal_of(request), _vm_id(request), wait=query.wait, timeout=query.timeout
    )
    return json_response(vm)


async def kill_vm(request: web.Request) -> web.Response:
    """DELETE /vms/{id}: kill at the site or cloud, or take a queued request out of the queue."""
    query = read_query(request, KillQuery)
    vm = await request.app[BROKER].kill(principal_of(request), _vm_id(request), force=query.force)
    return json_response(vm)


async def stop_vm(request: web.Request) -> web.Response:
    vm_id = _vm_id(request)
    body = await read_json(request, StopRequest) if request.can_read_body else StopRequest()
    vm = await request.app[BROKER].stop(
        principal_of(request), vm_id, body.model_dump(mode="json", exclude_none=True)
    )
    return json_response(vm, status=202)


async def reboot_vm(request: web.Request) -> web.Response:
    vm = await request.app[BROKER].reboot(principal_of(request), _vm_id(request))
    return json_response(vm)


async def vm_console(request: web.Request) -> web.Response:
    query = read_query(request, ConsoleQuery)
    output = await request.app[BROKER].console(principal_of(request), _vm_id(request), query.tail)
    return json_response(output)


async def vm_events(request: web.Request) -> web.Response:
    """GET /vms/{id}/events: the broker's events merged with the site's, oldest first."""
    events = await request.app[BROKER].events(principal_of(request), _vm_id(request))
    return json_response(events)


def routes() -> list[RouteSpec]:
    tags = ("vms",)
    return [
        RouteSpec(
            "GET", "/vms", list_vms, "List the caller's VMs on every site and cloud",
            response_model=BrokerVmList, query_model=VmListQuery, tags=tags,
        ),
        RouteSpec(
            "POST", "/vms", create_vms,
            "Create VMs: place on a site (failover), burst or queue (202; Idempotency-Key)",
            request_model=BrokerVmCreate, response_model=BrokerVmList, status=202, tags=tags,
        ),
        RouteSpec(
            "GET", "/vms/{vm_id}", show_vm, "Show a VM (optionally wait for running/ready)",
            response_model=BrokerVmPublic, query_model=VmShowQuery, tags=tags,
        ),
        RouteSpec(
            "DELETE", "/vms/{vm_id}", kill_vm, "Kill a VM (or cancel a queued request)",
            response_model=BrokerVmPublic, query_model=KillQuery, tags=tags,
        ),
        RouteSpec(
            "POST", "/vms/{vm_id}/stop", stop_vm,
            "Stop a VM cleanly (site VMs); optionally save it as an image at its site",
            request_model=StopRequest, body_required=False, response_model=BrokerVmPublic,
            status=202, tags=tags,
        ),
        RouteSpec(
            "POST", "/vms/{vm_id}/reboot", reboot_vm, "Reboot a VM (site VMs)",
            response_model=BrokerVmPublic, tags=tags,
        ),
        RouteSpec(
            "GET", "/vms/{vm_id}/console", vm_console, "Serial console output (site VMs)",
            response_model=ConsoleOutput, query_model=ConsoleQuery, tags=tags,
        ),
        RouteSpec(
            "GET", "/vms/{vm_id}/events", vm_events, "A VM's events: broker and site, merged",
            response_model=BrokerVmEventList, tags=tags,
        ),
    ]  # fmt: skip
