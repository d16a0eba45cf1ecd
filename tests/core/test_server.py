"""core.server: the runner of every service answers aiohttp's own errors in the JSON shape."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from core.app import SERVER_LIMITS, RouteSpec, make_app
from core.server import ServiceRunner


async def hello(_request: web.Request) -> web.Response:
    return web.json_response({"hello": True})


@pytest.fixture
async def port() -> AsyncIterator[int]:
    app = make_app([RouteSpec("GET", "/hello", hello, "hello", public=True)], title="t")
    runner = ServiceRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield runner.addresses[0][1]
    await runner.cleanup()


async def exchange(port: int, raw: bytes) -> tuple[int, str, dict[str, Any]]:
    """Send raw bytes; (status, content type, JSON body) of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:] if line)}
        body = await reader.readexactly(int(headers["content-length"]))
    finally:
        writer.close()
        await writer.wait_closed()
    return int(lines[0].split()[1]), headers["content-type"], json.loads(body)


async def test_a_header_over_the_limit_is_a_json_400(port: int) -> None:
    big = "x" * (SERVER_LIMITS["max_field_size"] + 10)
    raw = f"GET /api/v1/hello HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n".encode()
    status, content_type, body = await exchange(port, raw)
    assert status == 400
    assert content_type.startswith("application/json")
    assert body["error"]["code"] == "header_too_large"


async def test_a_malformed_request_is_a_json_400(port: int) -> None:
    status, content_type, body = await exchange(port, b"GET /api/v1/hello HTTP/1.1\r\nBad\r\n\r\n")
    assert status == 400
    assert content_type.startswith("application/json")
    assert body["error"]["code"] == "bad_request"
    assert body["error"]["message"].startswith("malformed HTTP request")


async def test_good_requests_are_untouched(port: int) -> None:
    status, _, body = await exchange(
        port, b"GET /api/v1/hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    assert (status, body) == (200, {"hello": True})
