"""Request parsing and response helpers shared by every aiohttp service.

Bodies and query strings are validated with pydantic models; models used for
input set ``extra="forbid"`` so an unknown field is an error, not silently
dropped.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from core.errors import BadRequest, PayloadTooLarge, ValidationFailed

ModelT = TypeVar("ModelT", bound=BaseModel)

MAX_JSON_BODY = 1 << 20  # 1 MiB: bigger bodies are refused before parsing.


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors as a JSON-safe list of ``{"field", "problem"}``."""
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(p) for p in err["loc"]) or "(body)"
        out.append({"field": field, "problem": err["msg"]})
    return out


def _validate(model: type[ModelT], data: Any) -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = validation_details(exc)
        summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details[:3])
        raise ValidationFailed(f"invalid request: {summary}", details=details) from exc


async def read_json(request: web.Request, model: type[ModelT]) -> ModelT:
    """Parse and validate the JSON body of ``request`` as ``model``.

    Raises ``BadRequest`` for a missing or malformed body, ``PayloadTooLarge``
    above :data:`MAX_JSON_BODY`, ``ValidationFailed`` naming each bad field.
    """
    if request.content_length is not None and request.content_length > MAX_JSON_BODY:
        raise PayloadTooLarge(f"request body larger than {MAX_JSON_BODY} bytes")
    raw = await request.content.read(MAX_JSON_BODY + 1)
    if len(raw) > MAX_JSON_BODY:
        raise PayloadTooLarge(f"request body larger than {MAX_JSON_BODY} bytes")
    if not raw.strip():
        raise BadRequest("request body is empty; a JSON object is required")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return _validate(model, data)


def read_query(request: web.Request, model: type[ModelT]) -> ModelT:
    """Validate the query string of ``request`` as ``model`` (unknown keys refused)."""
    return _validate(model, dict(request.query))


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response; pydantic models (and lists of them) are dumped in JSON mode."""
    if isinstance(data, BaseModel):
        payload: Any = data.model_dump(mode="json")
    elif isinstance(data, list):
        payload = [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in data]
    else:
        payload = data
    return web.json_response(payload, status=status, headers=headers)
