"""``/vms``: create, list, show, stop, kill, reboot, console, events."""

from __future__ import annotations

import re

from aiohttp import web
from pydantic import Field

from auth.delegation import BROKER_NAME
from auth.request import principal_of
from core.app import RouteSpec
from core.errors import NotFound
from core.http import json_response, read_body, read_json, read_query
from core.idempotency import idempotency_key
from core.resources.vms import (
    ConsoleOutput,
    ConsoleQuery,
    KillQuery,
    StopRequest,
    VmCreate,
    VmEventList,
    VmList,
    VmListQuery,
    VmPublic,
    VmShowQuery,
)
from site_agent.api.keys import VM_MANAGER

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class SiteVmListQuery(VmListQuery):
    """Query of the site's ``GET /vms``: the shared one, plus ``via``."""

    via: str | None = Field(
        default=None,
        pattern=BROKER_NAME.pattern,
        description="only VMs this broker created for their owners (admins: with all=true, "
        "every owner's: the broker's orphan sweep)",
    )


def _vm_id(request: web.Request) -> str:
    vm_id = request.match_info["vm_id"]
    if not _UUID.match(vm_id):
        raise NotFound(f"no VM with id {vm_id!r}")
    return vm_id


async def create_vms(request: web.Request) -> web.Response:
    """POST /vms: 202 with the new VMs in ``pending``; poll them or GET with ``?wait=``."""
    principal = principal_of(request)
    body = await read_json(request, VmCreate)
    key = idempotency_key(request)
    vms = await request.app[VM_MANAGER].create(principal, body, key)
    return json_response(VmList(vms=vms), status=202)


async def list_vms(request: web.Request) -> web.Response:
    """GET /vms: the caller's VMs (``all``: admins see every owner's; ``via``: by broker)."""
    principal = principal_of(request)
    query = read_query(request, SiteVmListQuery)
    vms = await request.app[VM_MANAGER].list_vms(
        principal, every_owner=query.all, include_done=query.include_done, via=query.via
    )
    return json_response(VmList(vms=vms))


async def show_vm(request: web.Request) -> web.Response:
    principal = principal_of(request)
    query = read_query(request, VmShowQuery)
    manager = request.app[VM_MANAGER]
    vm_id = _vm_id(request)
    if query.wait is None:
        vm = await manager.get(principal, vm_id)
    else:
        vm = await manager.wait(principal, vm_id, query.wait, query.timeout)
    return json_response(vm)


async def kill_vm(request: web.Request) -> web.Response:
    """DELETE /vms/{id}: destroy now, free everything; idempotent on a done VM.

    409 ``save_pending`` while a stop with ``save`` is in progress, unless ``?force=true``.
    """
    principal = principal_of(request)
    query = read_query(request, KillQuery)
    vm = await request.app[VM_MANAGER].kill(principal, _vm_id(request), force=query.force)
    return json_response(vm)


async def stop_vm(request: web.Request) -> web.Response:
    """POST /vms/{id}/stop: 202; an optional body ``{"save": {"name": ...}}`` saves the disk."""
    principal = principal_of(request)
    vm_id = _vm_id(request)
    # The body may have been read already (a delegated request's is, to check its hash).
    has_body = bool((await read_body(request)).strip())
    body = await read_json(request, StopRequest) if has_body else StopRequest()
    vm = await request.app[VM_MANAGER].stop(principal, vm_id, body.save)
    return json_response(vm, status=202)


async def reboot_vm(request: web.Request) -> web.Response:
    vm = await request.app[VM_MANAGER].reboot(principal_of(request), _vm_id(request))
    return json_response(vm)


async def vm_console(request: web.Request) -> web.Response:
    query = read_query(request, ConsoleQuery)
    output = await request.app[VM_MANAGER].console(
        principal_of(request), _vm_id(request), query.tail
    )
    return json_response(output)


async def vm_events(request: web.Request) -> web.Response:
    vm_id = _vm_id(request)
    events = await request.app[VM_MANAGER].events(principal_of(request), vm_id)
    return json_response(VmEventList(vm_id=vm_id, events=events))


def routes() -> list[RouteSpec]:
    tags = ("vms",)
    return [
        RouteSpec(
            "GET",
            "/vms",
            list_vms,
            "List the caller's VMs",
            response_model=VmList,
            query_model=SiteVmListQuery,
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
