"""One root exception for the site agent, its tree drawn once, and one table mapping it to HTTP."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import site_agent
import site_agent.errors
from core.app import RouteSpec, make_app
from site_agent.api.errors import HTTP_ERRORS, http_error, site_errors
from site_agent.compute.errors import DomainStateError, NoHostAvailable
from site_agent.errors import InvalidRequest, SiteAgentError
from site_agent.images.errors import ChecksumMismatch, ImageNameTaken, SourceRefused
from site_agent.networks.errors import AddressInUse, AddressOutsidePool, UnknownPool
from site_agent.vms.errors import NoCapacity, SavePending, VmNotFound
from site_agent.vms.states import InvalidTransition
from site_agent.volumes.errors import VolumeFileError, VolumeQuotaExceeded

#: Roots never raised bare, and errors that never reach a request handler (a bug, the
#: guest builder of the CLI, the heartbeat loop).
NOT_ANSWERED = {
    "SiteAgentError",
    "VmError",
    "VolumeError",
    "InvalidTransition",
    "GuestImageError",
    "MissingHostComponent",
    "HeartbeatRefused",
}


def every_site_error() -> set[type[SiteAgentError]]:
    """Every subclass of the root defined anywhere in the site agent (all modules imported)."""
    for module in pkgutil.walk_packages(site_agent.__path__, "site_agent."):
        if module.name.startswith("site_agent.compute.libvirt"):
            continue  # imports libvirt; its errors are compute errors
        importlib.import_module(module.name)
    found: set[type[SiteAgentError]] = set()
    todo: list[type[SiteAgentError]] = [SiteAgentError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(c for c in cls.__subclasses__() if c.__module__.startswith("site_agent."))
    return found


def test_the_tree_in_the_docstring_names_every_error() -> None:
    doc = site_agent.errors.__doc__ or ""
    missing = sorted(cls.__name__ for cls in every_site_error() if cls.__name__ not in doc)
    assert not missing, f"site_agent/errors.py does not draw: {missing}"


def test_every_error_a_handler_can_meet_is_answered_with_a_4xx_or_503() -> None:
    for cls in every_site_error():
        if cls.__name__ in NOT_ANSWERED:
            continue
        exc = cls.__new__(cls)
        Exception.__init__(exc, "x")
        error = http_error(exc)
        assert error is not None, f"{cls.__name__} has no HTTP answer"
        assert 400 <= error.status < 500 or error.status == 503, (cls.__name__, error.status)


def test_a_bug_is_not_dressed_up_as_an_answer() -> None:
    assert http_error(InvalidTransition("cannot go from done to running")) is None
    assert InvalidTransition not in HTTP_ERRORS


@pytest.mark.parametrize(
    ("exc", "status", "code", "details"),
    [
        (VmNotFound("0000"), 404, "not_found", None),
        (InvalidRequest("unknown image 'x'", field="image"), 422, "validation_failed", "image"),
        (NoCapacity("full", {"fake://a": "needs 2 vCPUs"}), 409, "no_capacity", None),
        (SavePending("stopping", "golden"), 409, "save_pending", None),
        (DomainStateError("not running"), 409, "invalid_state", None),
        (NoHostAvailable({"fake://a": "full"}), 409, "no_capacity", None),
        (ImageNameTaken("tiny"), 409, "image_exists", None),
        (ChecksumMismatch("sha256 differs"), 409, "image_error", None),
        (SourceRefused("bad scheme"), 422, "validation_failed", "url"),
        (VolumeQuotaExceeded("quota"), 403, "quota_exceeded", None),
        (VolumeFileError("qemu-img failed"), 503, "storage_error", None),
        (UnknownPool("no network 'dmz'"), 404, "not_found", None),
        (AddressOutsidePool("not in pool"), 422, "validation_failed", "address"),
        (AddressInUse("leased"), 409, "address_in_use", None),
    ],
)
def test_the_table(exc: SiteAgentError, status: int, code: str, details: str | None) -> None:
    error = http_error(exc)
    assert error is not None
    assert (error.status, error.code, error.message) == (status, code, str(exc))
    if details is not None:
        assert error.details == [{"field": details, "problem": error.details[0]["problem"]}]
    elif exc.details is not None:
        assert error.details == exc.details


async def test_the_middleware_answers_site_errors_and_hides_bugs(aiohttp_client: Any) -> None:
    async def refused(_request: web.Request) -> web.Response:
        raise SavePending("VM x is stopping to save its disk", "golden")

    async def bug(_request: web.Request) -> web.Response:
        raise InvalidTransition("cannot go from done to running")

    app = make_app(
        [
            RouteSpec("GET", "/refused", refused, "refused", public=True),
            RouteSpec("GET", "/bug", bug, "bug", public=True),
        ],
        title="errors",
        middlewares=[site_errors],
    )
    client: TestClient = await aiohttp_client(TestServer(app))
    resp = await client.get("/api/v1/refused")
    assert resp.status == 409
    assert await resp.json() == {
        "error": {
            "code": "save_pending",
            "message": "VM x is stopping to save its disk",
            "details": {"image": "golden"},
        }
    }
    resp = await client.get("/api/v1/bug")
    assert resp.status == 500
    body = await resp.json()
    assert body["error"]["code"] == "internal_error"
    assert "done to running" not in body["error"]["message"]
