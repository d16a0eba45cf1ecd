"""``/vms`` on the broker: the site API's VM operations, plus where each VM lives.

Same shapes as the site (:mod:`core.resources.vms`), each VM with ``site``,
``kind``, ``site_vm_id``...; the create body adds placement and policy
fields (:class:`~broker.vms.models.BrokerVmCreate`).
"""

from __future__ import annotations

from aiohttp import web

from auth.request import principal_of
from broker.api.common import broker, vm_id
from broker.vms.models import BrokerVmCreate, BrokerVmEventList, BrokerVmList, BrokerVmPublic
from core.app import RouteSpec
from core.http import json_response, read_body, read_json, read_query
from core.idempotency import idempotency_key
from core.resources.vms import (
    ConsoleOutput,
    ConsoleQuery,
    KillQuery,
    StopRequest,
    VmListQuery,
    VmShowQuery,
)


async def create_vms(request: web.Request) -> web.Response:
    """POST /vms: place, burst or queue; 202 with the VMs (``queued`` ones included)."""
    principal = principal_of(request)
    body = await read_json(request, BrokerVmCreate)
    key = idempotency_key(request)
    vms = await broker(request).creator.create(principal, body, key)
    return json_response(BrokerVmList(vms=vms), status=202)


async def list_vms(request: web.Request) -> web.Response:
    """GET /vms: every site and cloud asked at once; ``partial`` + ``warnings`` if one is down."""
    query = read_query(request, VmListQuery)
    listing = await broker(request).reader.list_vms(
        principal_of(request), every_owner=query.all, include_done=query.include_done
    )
    return json_response(listing)


async def show_vm(request: web.Request) -> web.Response:
    query = read_query(request, VmShowQuery)
    vm = await broker(request).reader.get(principal_of(request), vm_id(request), query)
    return json_response(vm)


async def kill_vm(request: web.Request) -> web.Response:
    """DELETE /vms/{id}: kill at the site or cloud, or take a queued request out of the queue."""
    query = read_query(request, KillQuery)
    operations = broker(request).operations
    return json_response(
        await operations.kill(principal_of(request), vm_id(request), force=query.force)
    )


async def stop_vm(request: web.Request) -> web.Response:
    """POST /vms/{id}/stop: clean shutdown; ``save`` keeps the root disk as an image."""
    vm = vm_id(request)
    has_body = bool((await read_body(request)).strip())
    body = await read_json(request, StopRequest) if has_body else StopRequest()
    stopped = await broker(request).operations.stop(principal_of(request), vm, body.save)
    return json_response(stopped, status=202)


async def reboot_vm(request: web.Request) -> web.Response:
    return json_response(
        await broker(request).operations.reboot(principal_of(request), vm_id(request))
    )


async def vm_console(request: web.Request) -> web.Response:
    query = read_query(request, ConsoleQuery)
    operations = broker(request).operations
    return json_response(
        await operations.console(principal_of(request), vm_id(request), query.tail)
    )


async def vm_events(request: web.Request) -> web.Response:
    """GET /vms/{id}/events: the broker's events merged with the site's, oldest first."""
    return json_response(
        await broker(request).operations.events(principal_of(request), vm_id(request))
    )


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
            "Stop a VM cleanly; optionally save it as an image at its site",
            request_model=StopRequest, body_required=False, response_model=BrokerVmPublic,
            status=202, tags=tags,
        ),
        RouteSpec(
            "POST", "/vms/{vm_id}/reboot", reboot_vm, "Reboot a VM",
            response_model=BrokerVmPublic, tags=tags,
        ),
        RouteSpec(
            "GET", "/vms/{vm_id}/console", vm_console, "Serial console output",
            response_model=ConsoleOutput, query_model=ConsoleQuery, tags=tags,
        ),
        RouteSpec(
            "GET", "/vms/{vm_id}/events", vm_events, "A VM's events: broker and site, merged",
            response_model=BrokerVmEventList, tags=tags,
        ),
    ]  # fmt: skip
