"""Checking a running service against the OpenAPI document it serves."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
from aiohttp import web
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012


def routed_operations(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path template) of every route the app serves under /api/v1."""
    ops = set()
    for route in app.router.routes():
        info = route.resource.canonical if route.resource else ""
        if route.method in ("HEAD", "OPTIONS") or not info.startswith("/api/v1"):
            continue
        if info == "/api/v1/openapi.json":
            continue
        ops.add((route.method, info))
    return ops


def documented_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item}


class ResponseChecker:
    """Validates response bodies against the document's schemas."""

    def __init__(self, doc: dict[str, Any]) -> None:
        validate_spec(doc)
        self.doc = doc
        resource = Resource.from_contents(doc, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource("urn:doc", resource)

    def schema_for(self, method: str, path: str, status: int) -> dict[str, Any] | None:
        template = self._match(path)
        op = self.doc["paths"][template][method.lower()]
        response = op["responses"].get(str(status)) or op["responses"]["default"]
        content = response.get("content", {}).get("application/json")
        return None if content is None else content["schema"]

    def check(self, method: str, path: str, status: int, body: Any) -> None:
        schema = self.schema_for(method, path, status)
        assert schema is not None, f"{method} {path} {status}: no schema documented"
        jsonschema.Draft202012Validator(_rebase(schema), registry=self.registry).validate(body)

    def _match(self, path: str) -> str:
        for template in self.doc["paths"]:
            pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
            if re.match(pattern, path):
                return template
        raise AssertionError(f"{path} is not documented")


def _rebase(schema: Any) -> Any:
    """Point local ``#/components/...`` refs at the registered document."""
    if isinstance(schema, dict):
        return {
            k: ("urn:doc" + v if k == "$ref" and v.startswith("#") else _rebase(v))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_rebase(v) for v in schema]
    return schema
