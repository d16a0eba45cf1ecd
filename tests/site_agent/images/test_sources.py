"""URL policy and verified fetching (``site_agent.images.sources``), with httpx MockTransport."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from site_agent.config import ImageCacheConfig
from site_agent.images.errors import (
    ChecksumMismatch,
    FetchFailed,
    ImageForbidden,
    SizeMismatch,
    SourceRefused,
)
from site_agent.images.fetcher import make_http_client
from site_agent.images.sources import (
    CHUNK,
    Expected,
    check_url,
    fetch_verified,
    local_path,
    redact,
)

DATA = bytes(range(256)) * 1000
GOOD = Expected(len(DATA), sha256=hashlib.sha256(DATA).hexdigest())


@pytest.mark.parametrize(
    ("url", "admin", "result"),
    [
        ("http://example.org/a.qcow2", False, "http://example.org/a.qcow2"),
        ("HTTPS://example.org/a?sig=1#frag", False, "https://example.org/a?sig=1"),
        ("file:///var/lib/img.qcow2", True, "file:///var/lib/img.qcow2"),
        ("file://localhost/var/lib/img%20x.qcow2", True, "file:///var/lib/img x.qcow2"),
        ("file:///var//lib/./img.qcow2", True, "file:///var/lib/img.qcow2"),
    ],
)
def test_accepted_urls(url: str, admin: bool, result: str) -> None:
    assert check_url(url, admin=admin) == result


@pytest.mark.parametrize(
    ("url", "admin", "error"),
    [
        ("file:///etc/shadow", False, ImageForbidden),
        ("file:///etc/../etc/shadow", True, SourceRefused),
        ("file:///etc/%2E%2E/etc/shadow", True, SourceRefused),
        ("file://host/etc/hostname", True, SourceRefused),
        ("file:///etc/hostname?x=1", True, SourceRefused),
        ("file:etc/hostname", True, SourceRefused),
        ("ftp://example.org/a", True, SourceRefused),
        ("data:,hello", True, SourceRefused),
        ("//example.org/a", False, SourceRefused),
        ("http://", False, SourceRefused),
        ("http://example.org:0x1/a", False, SourceRefused),
        ("http://example.org/a\nb", False, SourceRefused),
    ],
)
def test_refused_urls(url: str, admin: bool, error: type[Exception]) -> None:
    with pytest.raises(error):
        check_url(url, admin=admin)


def test_redact_drops_credentials_and_query() -> None:
    assert redact("https://user:pw@example.org:8443/x.qcow2?token=s3cret#f") == (
        "https://example.org:8443/x.qcow2"
    )


def test_local_path_is_normalised() -> None:
    assert local_path("file:///a//b/./c") == Path("/a/b/c")


def streamed(data: bytes) -> httpx.Response:
    """A 200 response whose body is read as a stream, as from a real server."""
    return httpx.Response(
        200, headers={"Content-Length": str(len(data))}, stream=httpx.ByteStream(data)
    )


MockClient = Callable[[Callable[[httpx.Request], Any]], httpx.AsyncClient]


@pytest.fixture
async def mock_client() -> AsyncIterator[MockClient]:
    """Makes httpx clients whose requests go to a handler (closed after the test)."""
    clients: list[httpx.AsyncClient] = []

    def make(handler: Callable[[httpx.Request], Any]) -> httpx.AsyncClient:
        # The production client (redirects, timeouts), with requests going to ``handler``.
        clients.append(make_http_client(ImageCacheConfig(), httpx.MockTransport(handler)))
        return clients[-1]

    yield make
    for client in clients:
        await client.aclose()


async def test_http_fetch_verifies_and_reports_both_digests(
    mock_client: MockClient, tmp_path: Path
) -> None:
    client = mock_client(lambda _r: streamed(DATA))
    dest = tmp_path / "out"
    digests = await fetch_verified("http://images.test/a", dest, GOOD, client)
    assert dest.read_bytes() == DATA
    assert digests.sha1 == hashlib.sha1(DATA, usedforsecurity=False).hexdigest()
    assert digests.sha256 == GOOD.sha256 and digests.size == len(DATA)


@pytest.mark.parametrize(
    ("response", "error", "needle"),
    [
        (streamed(DATA[:-1]), SizeMismatch, "short download"),
        (streamed(DATA + b"!"), SizeMismatch, "announces"),
        (
            streamed(DATA[:-1] + b"!"),
            ChecksumMismatch,
            "sha256 mismatch",
        ),
        (httpx.Response(500, content=b"oops"), FetchFailed, "HTTP 500"),
        (
            httpx.Response(302, headers={"Location": "file:///etc/shadow"}),
            FetchFailed,
            "unsupported protocol",
        ),
    ],
)
async def test_http_fetch_failures_remove_the_file(
    mock_client: MockClient,
    tmp_path: Path,
    response: httpx.Response,
    error: type[Exception],
    needle: str,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http":
            return streamed(b"root:secret")  # a transport that would serve file:// URLs
        return response

    client = mock_client(handler)
    dest = tmp_path / "out"
    with pytest.raises(error, match=needle):
        await fetch_verified("http://images.test/a", dest, GOOD, client)
    assert not dest.exists()


async def test_streamed_bytes_beyond_the_size_stop_the_download(
    mock_client: MockClient, tmp_path: Path
) -> None:
    produced = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        while True:
            produced += 65536
            yield b"\0" * 65536

    client = mock_client(lambda _r: httpx.Response(200, content=endless()))
    with pytest.raises(SizeMismatch, match="more than the expected"):
        await fetch_verified("http://images.test/a", tmp_path / "out", GOOD, client)
    assert produced <= len(DATA) + CHUNK + 65536  # stopped at the first chunk over the size


async def test_connection_errors_are_fetch_failures(
    mock_client: MockClient, tmp_path: Path
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = mock_client(refuse)
    with pytest.raises(
        FetchFailed, match=re.escape("cannot download http://images.test/a: connection")
    ):
        await fetch_verified("http://user:pw@images.test/a?k=v", tmp_path / "out", GOOD, client)


async def test_file_copy_is_verified(mock_client: MockClient, tmp_path: Path) -> None:
    client = mock_client(lambda _r: httpx.Response(599))
    source = tmp_path / "src"
    source.write_bytes(DATA)
    dest = tmp_path / "dest"
    digests = await fetch_verified(f"file://{source}", dest, GOOD, client)
    assert dest.read_bytes() == DATA and digests.size == len(DATA)
    source.write_bytes(DATA + b"more")
    with pytest.raises(SizeMismatch, match="more than the expected"):
        await fetch_verified(f"file://{source}", tmp_path / "dest2", GOOD, client)
    assert not (tmp_path / "dest2").exists()
    with pytest.raises(FetchFailed, match="cannot read"):
        await fetch_verified(f"file://{tmp_path}/missing", tmp_path / "dest3", GOOD, client)
