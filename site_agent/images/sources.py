"""Image sources: which URLs are accepted, and fetching one into a file with verification.

Accepted schemes: ``http`` and ``https`` for everyone, ``file`` (an absolute
local path, no ``..``) for site admins only. Anything else is refused.

:func:`fetch_verified` streams a source into a destination file while
counting and hashing: it stops as soon as the byte count exceeds the
expected size, and checks the final size and every given checksum before
returning. On any error the destination file is removed, so a caller that
writes into a temporary file and renames it afterwards never exposes an
unverified byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from site_agent.images.errors import (
    ChecksumMismatch,
    FetchFailed,
    ImageForbidden,
    SizeMismatch,
    SourceRefused,
)

CHUNK = 1024 * 1024
USER_SCHEMES = frozenset({"http", "https"})
ADMIN_SCHEMES = frozenset({"file"})


@dataclass(frozen=True)
class Expected:
    """What the bytes must be: exact size, and the checksums that were given."""

    size: int
    sha1: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Digests:
    """What the bytes were: size and both checksums (lower-case hex)."""

    size: int
    sha1: str
    sha256: str


def redact(url: str) -> str:
    """``url`` without user info, query or fragment (they may hold credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def check_url(url: str, *, admin: bool) -> str:
    """Validate ``url`` for a caller (``admin`` or not); returns it normalised.

    ``ImageForbidden`` for a ``file://`` URL from a non-admin,
    ``SourceRefused`` for anything malformed or of another scheme.
    """
    if any(ord(c) < 0x21 or c == "\x7f" for c in url):
        raise SourceRefused("the URL must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (validates the port)
    except ValueError as exc:
        raise SourceRefused(f"malformed URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme in USER_SCHEMES:
        if not parts.hostname:
            raise SourceRefused(f"{scheme} URL without a host")
        return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))
    if scheme in ADMIN_SCHEMES:
        if not admin:
            raise ImageForbidden("file:// URLs are reserved to site admins; use http(s)")
        return "file://" + str(local_path(url))
    shown = scheme or "(none)"
    raise SourceRefused(f"URL scheme {shown!r} is not supported; use http, https or file")


def local_path(url: str) -> Path:
    """The absolute path of a ``file://`` URL; ``SourceRefused`` if it is not a plain one."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise SourceRefused("file:// URLs must name a local path (file:///absolute/path)")
    if parts.query or parts.fragment:
        raise SourceRefused("file:// URLs take no query or fragment")
    path = unquote(parts.path)
    if "\x00" in path or not path.startswith("/"):
        raise SourceRefused("file:// URLs need an absolute path")
    if ".." in PurePosixPath(path).parts:
        raise SourceRefused("file:// paths must not contain '..'")
    return Path(os.path.normpath(path))


class _Sink:
    """Writes chunks to a file while counting and hashing; refuses more than ``limit`` bytes."""

    def __init__(self, out: IO[bytes], expected: Expected, what: str) -> None:
        self.out = out
        self.expected = expected
        self.what = what
        self.size = 0
        self.sha1 = hashlib.sha1(usedforsecurity=False)
        self.sha256 = hashlib.sha256()
        self.aborted = False

    def write(self, chunk: bytes) -> None:
        if self.aborted:  # the fetch was cancelled; a copying thread stops here
            raise FetchFailed(f"{self.what}: download aborted")
        self.size += len(chunk)
        if self.size > self.expected.size:
            raise SizeMismatch(
                f"{self.what}: more than the expected {self.expected.size} bytes; download stopped"
            )
        self.sha1.update(chunk)
        self.sha256.update(chunk)
        self.out.write(chunk)

    def finish(self) -> Digests:
        self.out.flush()
        os.fsync(self.out.fileno())
        if self.size < self.expected.size:
            raise SizeMismatch(
                f"{self.what}: short download: {self.size} of the expected"
                f" {self.expected.size} bytes"
            )
        digests = Digests(self.size, self.sha1.hexdigest(), self.sha256.hexdigest())
        for algo, want, got in (
            ("sha1", self.expected.sha1, digests.sha1),
            ("sha256", self.expected.sha256, digests.sha256),
        ):
            if want is not None and want.lower() != got:
                raise ChecksumMismatch(f"{self.what}: {algo} mismatch: expected {want}, got {got}")
        return digests


async def fetch_verified(
    url: str, dest: Path, expected: Expected, client: httpx.AsyncClient, *, what: str = "image"
) -> Digests:
    """Copy ``url`` into ``dest`` (created 0644), verified against ``expected``.

    Raises ``SizeMismatch`` (stopping early when the source is longer than
    expected), ``ChecksumMismatch``, or ``FetchFailed`` (unreachable source,
    HTTP status other than 200, unreadable file). ``dest`` is removed on
    every error and on cancellation.
    """
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    sink: _Sink | None = None
    try:
        with os.fdopen(fd, "wb") as out:
            sink = _Sink(out, expected, what)
            if urlsplit(url).scheme == "file":
                await asyncio.to_thread(_copy_file, local_path(url), sink)
            else:
                await _download(url, sink, client)
            return await asyncio.to_thread(sink.finish)
    except BaseException:
        if sink is not None:
            sink.aborted = True
        dest.unlink(missing_ok=True)
        raise


def digest_file(path: Path) -> Digests:
    """Size and checksums of a local file (blocking: run it in a thread)."""
    sha1 = hashlib.sha1(usedforsecurity=False)
    sha256 = hashlib.sha256()
    size = 0
    with path.open("rb") as src:
        while chunk := src.read(CHUNK):
            size += len(chunk)
            sha1.update(chunk)
            sha256.update(chunk)
    return Digests(size, sha1.hexdigest(), sha256.hexdigest())


def _copy_file(path: Path, sink: _Sink) -> None:
    try:
        with path.open("rb") as src:
            size = os.fstat(src.fileno()).st_size
            if size > sink.expected.size:
                raise SizeMismatch(
                    f"{sink.what}: {path} has {size} bytes, more than the expected"
                    f" {sink.expected.size}"
                )
            while chunk := src.read(CHUNK):
                sink.write(chunk)
    except OSError as exc:
        raise FetchFailed(f"{sink.what}: cannot read {path}: {exc.strerror or exc}") from exc


async def _download(url: str, sink: _Sink, client: httpx.AsyncClient) -> None:
    shown = redact(url)
    try:
        async with client.stream("GET", url, headers={"Accept-Encoding": "identity"}) as resp:
            if resp.status_code != 200:
                raise FetchFailed(f"{sink.what}: HTTP {resp.status_code} from {shown}")
            announced = resp.headers.get("Content-Length")
            if announced and announced.isdigit() and int(announced) > sink.expected.size:
                raise SizeMismatch(
                    f"{sink.what}: {shown} announces {announced} bytes, more than the"
                    f" expected {sink.expected.size}; not downloaded"
                )
            async for chunk in resp.aiter_raw(CHUNK):
                await asyncio.to_thread(sink.write, chunk)
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise FetchFailed(f"{sink.what}: cannot download {shown}: {reason}") from exc
