"""core.app: JSON errors for every failure, public routes, and an OpenAPI document that matches."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from core.app import RouteSpec, build_openapi, is_public, make_app, template_path
from core.errors import Conflict


class Echo(BaseModel):
    public: bool


async def public_handler(request: web.Request) -> web.Response:
    return web.json_response({"public": is_public(request)})


async def conflict_handler(_request: web.Request) -> web.Response:
    raise Conflict("already there", code="exists", details={"name": "x"})


async def broken_handler(_request: web.Request) -> web.Response:
    raise RuntimeError("secret internal detail")


def app() -> web.Application:
    return make_app(
        [
            RouteSpec("GET", "/open", public_handler, "open", response_model=Echo, public=True),
            RouteSpec("GET", "/closed/{name:.+}", public_handler, "closed", response_model=Echo),
            RouteSpec("POST", "/conflict", conflict_handler, "conflict"),
            RouteSpec("GET", "/broken", broken_handler, "broken"),
        ],
        title="test",
    )


async def test_routes_know_whether_they_are_public(aiohttp_client: Any) -> None:
    client = await aiohttp_client(app())
    assert (await (await client.get("/api/v1/open")).json()) == {"public": True}
    assert (await (await client.get("/api/v1/closed/a/b")).json()) == {"public": False}


async def test_domain_errors_become_json(aiohttp_client: Any) -> None:
    client = await aiohttp_client(app())
    resp = await client.post("/api/v1/conflict")
    assert resp.status == 409
    assert await resp.json() == {
        "error": {"code": "exists", "message": "already there", "details": {"name": "x"}}
    }


async def test_unexpected_errors_are_500_without_internals(aiohttp_client: Any) -> None:
    client = await aiohttp_client(app())
    resp = await client.get("/api/v1/broken")
    assert resp.status == 500
    body = await resp.json()
    assert body["error"]["code"] == "internal_error"
    assert "secret" not in await resp.text()


async def test_router_errors_are_json(aiohttp_client: Any) -> None:
    client = await aiohttp_client(app())
    resp = await client.get("/api/v1/nowhere")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    resp = await client.delete("/api/v1/open")
    assert resp.status == 405 and (await resp.json())["error"]["code"] == "method_not_allowed"


def test_openapi_uses_plain_templates_for_regex_routes() -> None:
    assert template_path("/closed/{name:.+}/x/{id}") == "/closed/{name}/x/{id}"
    doc = build_openapi(
        [RouteSpec("GET", "/closed/{name:.+}", public_handler, "closed", response_model=Echo)],
        title="t",
        version="1",
    )
    op = doc["paths"]["/api/v1/closed/{name}"]["get"]
    assert op["parameters"][0]["name"] == "name"
    assert op["security"] == [{"bearer": []}]
    assert doc["components"]["schemas"]["Echo"]["properties"]["public"]["type"] == "boolean"
