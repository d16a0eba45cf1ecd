"""Request parsing and response helpers shared by every aiohttp service.

Bodies and query strings are validated with pydantic models; models used for
input set ``extra="forbid"`` so an unknown field is an error, not silently
dropped.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypeVar

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import BadHttpMessage
from pydantic import BaseModel, ValidationError

from core.errors import BadRequest, PayloadTooLarge, ValidationFailed

ModelT = TypeVar("ModelT", bound=BaseModel)


MAX_JSON_BODY = 1 << 20  # 1 MiB: the app's client_max_size; bigger bodies are refused (413).
MAX_JSON_DEPTH = 32  # no Stratus request nests deeper; deeper is refused before parsing (400)
BODY_SECONDS = 30.0  # a body not complete within this time is refused (400)
MAX_INT_DIGITS = 32  # no Stratus field needs a longer integer (400, not Python's int limit)


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors as a JSON-safe list of ``{"field", "problem"}``."""
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(p) for p in err["loc"]) or "(body)"
        out.append({"field": field, "problem": err["msg"]})
    return out


def _validate(model: type[ModelT], data: Any, *, json_text: bytes | None = None) -> ModelT:
    """``data`` (or, strictly, the JSON text it was parsed from) as ``model``.

    A JSON body is validated in pydantic's strict JSON mode: ``true`` is not
    an integer, ``"3"`` is not a number, ``1.5`` is not an integer; a query
    string (all text) is validated in lax mode.
    """
    try:
        if json_text is not None:
            return model.model_validate_json(json_text, strict=True)
        return model.model_validate(data)
    except ValidationError as exc:
        details = validation_details(exc)
        summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details[:3])
        raise ValidationFailed(f"invalid request: {summary}", details=details) from exc


async def read_body(request: web.Request) -> bytes:
    """The whole request body (``b""`` if none), read to its end; the same bytes on every call.

    Raises ``PayloadTooLarge`` beyond the app's ``client_max_size``
    (:data:`MAX_JSON_BODY` for every Stratus service), chunked or not;
    ``BadRequest`` when the chunked encoding is broken, or when the body is
    not complete within :data:`BODY_SECONDS` (e.g. a ``Content-Length``
    larger than what the client sends). Never answers from part of a body.
    Uses aiohttp's own cache, so a middleware that read the body first (to
    hash it) and the handler get the same bytes.
    """
    limit = request.client_max_size
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body larger than {limit} bytes")
    try:
        async with asyncio.timeout(BODY_SECONDS):
            return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(f"request body larger than {limit} bytes") from exc
    except TimeoutError as exc:
        announced = f" of the {request.content_length} announced" if request.content_length else ""
        raise BadRequest(
            f"request body incomplete: not all bytes{announced} arrived within {BODY_SECONDS:g} s"
        ) from exc
    except (BadHttpMessage, ClientPayloadError) as exc:
        raise BadRequest(f"incomplete or malformed request body: {exc}") from exc


async def read_json(request: web.Request, model: type[ModelT]) -> ModelT:
    """Parse and validate the JSON body of ``request`` as ``model``.

    The body is read completely (:func:`read_body`). Raises ``BadRequest``
    for a missing, malformed or too deeply nested body (more than
    :data:`MAX_JSON_DEPTH` levels) or an integer of more than
    :data:`MAX_INT_DIGITS` digits; ``ValidationFailed`` naming each bad field,
    including any string holding a NUL character (no Stratus field accepts
    one, and PostgreSQL cannot store it) and any value of the wrong JSON type
    (strict: a boolean is not an integer, a string is not a number).
    """
    raw = await read_body(request)
    if not raw.strip():
        raise BadRequest("request body is empty; a JSON object is required")
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    check_strings(data)
    return _validate(model, data, json_text=raw)


def parse_json(raw: bytes) -> Any:
    """``raw`` as JSON, with the limits of :func:`read_json` (``BadRequest`` otherwise)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request body is not valid UTF-8: {exc}") from exc
    depth = _nesting_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise BadRequest(
            f"request body is nested {depth} levels deep; the limit is {MAX_JSON_DEPTH}"
        )
    try:
        return json.loads(text, parse_int=_parse_int, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    except ValueError as exc:  # from _parse_int / _no_constant
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc


def _nesting_depth(text: str) -> int:
    """The deepest ``[``/``{`` nesting of a JSON text (brackets inside strings ignored).

    Linear and non-recursive, so a hostile body cannot exhaust the parser's stack.
    """
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of more than {MAX_INT_DIGITS} digits")
    return int(digits)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def check_strings(data: Any, path: str = "") -> None:
    """``ValidationFailed`` naming the field when any key or string in ``data`` holds a NUL."""
    stack: list[tuple[str, Any]] = [(path, data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                _nul(where)
        elif isinstance(value, dict):
            for key, item in value.items():
                field = f"{where}.{key}" if where else str(key)
                if "\x00" in str(key):
                    _nul(where or "(body)")
                stack.append((field, item))
        elif isinstance(value, list):
            stack.extend((f"{where}.{i}", item) for i, item in enumerate(value))


def _nul(field: str) -> None:
    details = [{"field": field or "(body)", "problem": "must not contain a NUL character"}]
    raise ValidationFailed(
        f"invalid request: {field or '(body)'}: must not contain a NUL character", details=details
    )


def read_query(request: web.Request, model: type[ModelT]) -> ModelT:
    """Validate the query string of ``request`` as ``model`` (unknown keys refused).

    A key given twice is refused rather than silently taking one of the values.
    """
    query = request.query
    repeated = sorted({key for key in query if len(query.getall(key)) > 1})
    if repeated:
        details = [{"field": key, "problem": "given more than once"} for key in repeated]
        raise ValidationFailed(
            f"invalid request: {repeated[0]}: given more than once", details=details
        )
    data = dict(query)
    check_strings(data)
    return _validate(model, data)


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
