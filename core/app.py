"""aiohttp application scaffolding: error middleware, route specs, OpenAPI.

Every service builds its app with :func:`make_app` and declares its routes as
:class:`RouteSpec` objects; the same specs register the handlers and produce
the OpenAPI document served at ``/api/v1/openapi.json``, so the document
cannot drift from what the app serves.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from core.errors import StratusError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

API_PREFIX = "/api/v1"

# HTTP parser limits for every service's runner: room for an 8 KiB token or
# a forwarded certificate chain; the auth layer refuses headers above 16 KiB
# itself, with a JSON 401, before aiohttp's plain-text 400 would trigger.
SERVER_LIMITS: dict[str, Any] = {"max_field_size": 32 * 1024, "max_line_size": 32 * 1024}


@dataclass(frozen=True)
class RouteSpec:
    """One HTTP operation: how it is routed and how OpenAPI describes it."""

    method: str
    path: str
    handler: Handler
    summary: str
    request_model: type[BaseModel] | None = None
    body_required: bool = True  # False: the request body may be omitted
    response_model: type[BaseModel] | None = None
    status: int = 200
    query_model: type[BaseModel] | None = None
    public: bool = False  # True: no authentication required
    tags: tuple[str, ...] = field(default_factory=tuple)


def _error_body(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn domain errors and aiohttp HTTP errors into JSON error bodies.

    Unexpected exceptions become a 500 with a generic message (the traceback
    goes to the log, never to the client).
    """
    try:
        return await handler(request)
    except StratusError as exc:
        return web.json_response(exc.to_json(), status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status, "http_error"
        )
        message = exc.reason if exc.status != 404 else f"no such path: {request.path}"
        # 405 must say which methods the path takes (RFC 9110 15.5.6).
        allow = exc.headers.get("Allow")
        if exc.status == 405 and allow is not None:
            message = f"{request.method} is not allowed on {request.path}; allowed: {allow}"
        return _error_body(exc.status, code, message, {"Allow": allow} if allow else None)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error_body(500, "internal_error", "internal error; see the service log")


def make_app(
    routes: Iterable[RouteSpec],
    *,
    title: str,
    version: str = "0.1.0",
    middlewares: Iterable[Any] = (),
    client_max_size: int = 1 << 20,
) -> web.Application:
    """Build an app serving ``routes`` under ``/api/v1`` plus the OpenAPI document.

    ``middlewares`` run inside the error middleware, so errors they raise are
    reported as JSON too.
    """
    specs = list(routes)
    app = web.Application(
        middlewares=[error_middleware, *middlewares], client_max_size=client_max_size
    )
    openapi = build_openapi(specs, title=title, version=version)

    async def serve_openapi(_request: web.Request) -> web.Response:
        return web.json_response(openapi)

    for spec in specs:
        app.router.add_route(spec.method, API_PREFIX + spec.path, spec.handler)
    app.router.add_get(API_PREFIX + "/openapi.json", serve_openapi)
    app[PUBLIC_ROUTES] = frozenset(
        (spec.method, API_PREFIX + template_path(spec.path)) for spec in specs if spec.public
    ) | {("GET", API_PREFIX + "/openapi.json")}
    return app


# (method, canonical path) of the routes open without authentication, computed once per app.
PUBLIC_ROUTES: web.AppKey[frozenset[tuple[str, str]]] = web.AppKey("public_routes", frozenset)


def is_public(request: web.Request) -> bool:
    """True when the matched route was declared ``public`` (or is the OpenAPI document).

    An unmatched request counts as public so that the router answers 404/405.
    """
    resource = request.match_info.route.resource
    if resource is None:
        return True
    return (request.method, resource.canonical) in request.app[PUBLIC_ROUTES]


def build_openapi(specs: Iterable[RouteSpec], *, title: str, version: str) -> dict[str, Any]:
    """An OpenAPI 3.1 document for ``specs`` with pydantic-generated schemas."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "details": {},
                    },
                }
            },
        }
    }

    def ref(model: type[BaseModel]) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas[name] = sub
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    for spec in specs:
        op: dict[str, Any] = {
            "summary": spec.summary,
            "operationId": spec.handler.__name__,
            "responses": {
                "default": {
                    "description": "error",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
            },
        }
        if spec.tags:
            op["tags"] = list(spec.tags)
        params = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in _path_params(spec.path)
        ]
        if spec.query_model is not None:
            qschema = spec.query_model.model_json_schema()
            for name, prop in qschema.get("properties", {}).items():
                params.append({"name": name, "in": "query", "required": False, "schema": prop})
        if params:
            op["parameters"] = params
        if spec.request_model is not None:
            op["requestBody"] = {
                "required": spec.body_required,
                "content": {"application/json": {"schema": ref(spec.request_model)}},
            }
        response: dict[str, Any] = {"description": "success"}
        if spec.response_model is not None:
            response["content"] = {"application/json": {"schema": ref(spec.response_model)}}
        op["responses"][str(spec.status)] = response
        if not spec.public:
            op["security"] = [{"bearer": []}]
        paths.setdefault(API_PREFIX + template_path(spec.path), {})[spec.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def template_path(path: str) -> str:
    """``path`` without aiohttp's regex parts: ``/a/{g:.+}`` -> ``/a/{g}`` (OpenAPI form)."""
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)


def _path_params(path: str) -> list[str]:
    return [part[1:-1].split(":")[0] for part in path.split("/") if part.startswith("{")]
