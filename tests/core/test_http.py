"""core.http: bodies read completely within the limit, hostile JSON refused with a 4xx."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from pydantic import BaseModel, ConfigDict

from core import http
from core.app import RouteSpec, make_app
from core.http import MAX_JSON_BODY, MAX_JSON_DEPTH, json_response, read_json, read_query


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = ""
    items: list[Any] = []
    count: int = 0


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tag: str | None = None


async def echo(request: web.Request) -> web.Response:
    body = await read_json(request, Body)
    return json_response({"length": len(body.text), "items": len(body.items)})


async def search(request: web.Request) -> web.Response:
    return json_response(read_query(request, Query).model_dump())


def app() -> web.Application:
    return make_app(
        [
            RouteSpec("POST", "/echo", echo, "echo", request_model=Body, public=True),
            RouteSpec("GET", "/search", search, "search", query_model=Query, public=True),
        ],
        title="test",
    )


async def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, Any]]:
    """Send raw bytes over a loopback socket and read one answer (without closing our side)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        payload = await reader.readexactly(int(headers["Content-Length"]))
    finally:
        writer.close()
        await writer.wait_closed()
    return int(lines[0].split(" ", 2)[1]), json.loads(payload)


async def test_a_large_body_arriving_in_pieces_is_read_whole(aiohttp_client: Any) -> None:
    client = await aiohttp_client(app())
    text = "x" * (MAX_JSON_BODY - 100)

    async def trickle() -> Any:
        data = json.dumps({"text": text}).encode()
        for start in range(0, len(data), 4096):
            yield data[start : start + 4096]
            await asyncio.sleep(0)

    resp = await client.post(
        "/api/v1/echo", data=trickle(), headers={"Content-Type": "application/json"}
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["length"] == len(text)


async def test_chunked_body_over_the_limit_is_413_json(aiohttp_client: Any) -> None:
    client = await aiohttp_client(app())

    async def chunks() -> Any:
        yield b'{"text": "'
        for _ in range(MAX_JSON_BODY // 65536 + 2):
            yield b"y" * 65536
        yield b'"}'

    resp = await client.post("/api/v1/echo", data=chunks())
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "payload_too_large"


async def test_body_shorter_than_its_content_length_is_400(
    aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client sends fewer bytes than announced and waits: refused once the body stalls."""
    monkeypatch.setattr(http, "BODY_SECONDS", 0.2)
    server = await aiohttp_server(app())
    body = b'{"text": "abc"}'
    request = (
        b"POST /api/v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body) + 50).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )
    status, answer = await raw_exchange(server.port, request)
    assert status == 400
    assert "incomplete" in answer["error"]["message"]
    assert answer["error"]["code"] == "bad_request"


async def test_deep_nesting_is_400_not_500(aiohttp_client: Any) -> None:
    client = await aiohttp_client(app())
    for depth in (MAX_JSON_DEPTH + 1, 100_000):
        nested = "[" * depth + "]" * depth
        resp = await client.post("/api/v1/echo", data=f'{{"items": {nested}}}')
        assert resp.status == 400, depth
        assert "nested" in (await resp.json())["error"]["message"]
    # Brackets inside strings do not count.
    resp = await client.post("/api/v1/echo", data=json.dumps({"text": "[" * 1000}))
    assert resp.status == 200


async def test_huge_integers_and_nan_are_400(aiohttp_client: Any) -> None:
    client = await aiohttp_client(app())
    resp = await client.post("/api/v1/echo", data='{"count": ' + "9" * 5000 + "}")
    assert resp.status == 400
    resp = await client.post("/api/v1/echo", data='{"count": NaN}')
    assert resp.status == 400


@pytest.mark.parametrize(
    "body", [{"text": "a\x00b"}, {"items": ["ok", {"k": "\x00"}]}, {"items": [{"\x00": 1}]}]
)
async def test_nul_in_any_string_is_422_naming_the_field(aiohttp_client: Any, body: Any) -> None:
    client = await aiohttp_client(app())
    resp = await client.post("/api/v1/echo", data=json.dumps(body))
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert "NUL" in error["message"]
    assert error["details"][0]["field"] != ""


async def test_query_nul_and_repeated_keys_are_422(aiohttp_client: Any) -> None:
    client = await aiohttp_client(app())
    resp = await client.get("/api/v1/search", params={"tag": "a\x00"})
    assert resp.status == 422
    resp = await client.get("/api/v1/search?tag=a&tag=b")
    assert resp.status == 422
    assert "more than once" in (await resp.json())["error"]["message"]
    resp = await client.get("/api/v1/search?tag=a")
    assert await resp.json() == {"tag": "a"}


async def test_405_carries_allow(aiohttp_client: Any) -> None:
    client = await aiohttp_client(app())
    resp = await client.delete("/api/v1/echo")
    assert resp.status == 405
    assert "POST" in resp.headers["Allow"]
    assert "POST" in (await resp.json())["error"]["message"]


@pytest.mark.parametrize("count", ["true", '"3"', "1.5"])
async def test_json_types_are_strict(aiohttp_client: Any, count: str) -> None:
    client = await aiohttp_client(app())
    resp = await client.post("/api/v1/echo", data='{"count": ' + count + "}")
    assert resp.status == 422
    assert (await resp.json())["error"]["details"][0]["field"] == "count"
    resp = await client.post("/api/v1/echo", data='{"count": 3}')
    assert resp.status == 200
