"""``/vms``: create, list, show, stop, kill, reboot, console, events."""

from __future__ import annotations

import re

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from auth.request import principal_of
from core.app import RouteSpec
from core.errors import NotFound
from core.http import json_response, read_json, read_query
from core.idempotency import idempotency_key
from core.vm_request import VmListQuery, VmShowQuery
from site_agent.api.keys import LAYOUT, VM_MANAGER
from site_agent.images.models import SaveAs
from site_agent.vms.console import read_tail
from site_agent.vms.models import (
    ConsoleOutput,
    Vm,
    VmCreate,
    VmEventList,
    VmEventPublic,
    VmList,
    VmPublic,
)
from site_agent.vms.states import VmState

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class StopRequest(BaseModel):
    """Optional body of ``POST /vms/{id}/stop``."""

    model_config = ConfigDict(extra="forbid")
    save: SaveAs | None = Field(
        default=None, description="once the guest is off, keep its root disk as this new image"
    )


class KillQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    force: bool = Field(default=False, description="kill even if a save as image is pending")


class ConsoleQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tail: int = Field(default=65536, ge=1, le=4 * 1024 * 1024, description="bytes from the end")


def _vm_id(request: web.Request) -> str:
    vm_id = request.match_info["vm_id"]
    if not _UUID.match(vm_id):
        raise NotFound(f"no VM with id {vm_id!r}")
    return vm_id


def _public(vm: Vm) -> VmPublic:
    return VmPublic.of(vm)


async def create_vms(request: web.Request) -> web.Response:
    """POST /vms: 202 with the new VMs in ``pending``; poll them or GET with ``?wait=``."""
    principal = principal_of(request)
    body = await read_json(request, VmCreate)
    key = idempotency_key(request)
    vms = await request.app[VM_MANAGER].create(principal, body, key)
    return json_response(VmList(vms=[_public(vm) for vm in vms]), status=202)


async def list_vms(request: web.Request) -> web.Response:
    principal = principal_of(request)
    query = read_query(request, VmListQuery)
    rows = await request.app[VM_MANAGER].list_for(
        principal, every_owner=query.all, include_done=query.include_done
    )
    return json_response(VmList(vms=[_public(vm) for vm in rows]))


async def show_vm(request: web.Request) -> web.Response:
    principal = principal_of(request)
    query = read_query(request, VmShowQuery)
    manager = request.app[VM_MANAGER]
    vm_id = _vm_id(request)
    if query.wait is None:
        vm = await manager.get_for(principal, vm_id)
    else:
        vm = await manager.wait_for(principal, vm_id, query.wait, query.timeout)
    return json_response(_public(vm))


async def kill_vm(request: web.Request) -> web.Response:
    """DELETE /vms/{id}: destroy now, free everything; idempotent on a done VM.

    409 ``save_pending`` while a stop with ``save`` is in progress, unless ``?force=true``.
    """
    principal = principal_of(request)
    query = read_query(request, KillQuery)
    vm = await request.app[VM_MANAGER].kill(principal, _vm_id(request), force=query.force)
    return json_response(_public(vm))


async def stop_vm(request: web.Request) -> web.Response:
    """POST /vms/{id}/stop: 202; an optional body ``{"save": {"name": ...}}`` saves the disk."""
    principal = principal_of(request)
    vm_id = _vm_id(request)
    body = await read_json(request, StopRequest) if request.can_read_body else StopRequest()
    vm = await request.app[VM_MANAGER].stop(principal, vm_id, body.save)
    return json_response(_public(vm), status=202)


async def reboot_vm(request: web.Request) -> web.Response:
    vm = await request.app[VM_MANAGER].reboot(principal_of(request), _vm_id(request))
    return json_response(_public(vm))


async def vm_console(request: web.Request) -> web.Response:
    principal = principal_of(request)
    query = read_query(request, ConsoleQuery)
    vm = await request.app[VM_MANAGER].get_for(principal, _vm_id(request))
    layout = request.app[LAYOUT]
    text, truncated = read_tail(layout.readable_console_log(vm.id), query.tail)
    return json_response(ConsoleOutput(vm_id=vm.id, output=text, truncated=truncated))


async def vm_events(request: web.Request) -> web.Response:
    vm_id = _vm_id(request)
    events = await request.app[VM_MANAGER].events_for(principal_of(request), vm_id)
    return json_response(
        VmEventList(
            vm_id=vm_id,
            events=[
                VmEventPublic(
                    at=e.at,
                    from_state=VmState(e.from_state) if e.from_state else None,
                    to_state=VmState(e.to_state) if e.to_state else None,
                    reason=e.reason,
                )
                for e in events
            ],
        )
    )


def routes() -> list[RouteSpec]:
    tags = ("vms",)
    return [
        RouteSpec(
            "GET",
            "/vms",
            list_vms,
            "List the caller's VMs",
            response_model=VmList,
            query_model=VmListQuery,
            tags=tags,
        ),
        RouteSpec(
            "POST",
            "/vms",
            create_vms,
            "Create VMs (202; Idempotency-Key honoured)",
            request_model=VmCreate,
            response_model=VmList,
            status=202,
            tags=tags,
        ),
        RouteSpec(
            "GET",
            "/vms/{vm_id}",
            show_vm,
            "Show a VM (optionally wait for running/ready)",
            response_model=VmPublic,
            query_model=VmShowQuery,
            tags=tags,
        ),
        RouteSpec(
            "DELETE",
            "/vms/{vm_id}",
            kill_vm,
            "Kill a VM: destroy now, free everything (?force=true drops a pending save)",
            response_model=VmPublic,
            query_model=KillQuery,
            tags=tags,
        ),
        RouteSpec(
            "POST",
            "/vms/{vm_id}/stop",
            stop_vm,
            "Stop a VM cleanly (ACPI), destroy after timeout; optionally save it as an image",
            request_model=StopRequest,
            body_required=False,
            response_model=VmPublic,
            status=202,
            tags=tags,
        ),
        RouteSpec(
            "POST",
            "/vms/{vm_id}/reboot",
            reboot_vm,
            "Reboot a VM (hard reset)",
            response_model=VmPublic,
            tags=tags,
        ),
        RouteSpec(
            "GET",
            "/vms/{vm_id}/console",
            vm_console,
            "Serial console output",
            response_model=ConsoleOutput,
            query_model=ConsoleQuery,
            tags=tags,
        ),
        RouteSpec(
            "GET",
            "/vms/{vm_id}/events",
            vm_events,
            "A VM's event log",
            response_model=VmEventList,
            tags=tags,
        ),
    ]
