"""Helpers shared by the test suite."""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_ADMIN_URL = os.environ.get("STRATUS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(what: str) -> None:
    """A needed daemon or tool is missing: fail inside CI, skip elsewhere."""
    if in_ci():
        pytest.fail(f"{what} is required in CI (CI=true) but is not available")
    pytest.skip(f"{what} not available (this would fail in CI)")


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"the {name!r} command")
    assert path is not None
    return path


def libvirt_available(uri: str = "qemu:///system") -> bool:
    try:
        import libvirt
    except ImportError:
        return False
    libvirt.registerErrorHandler(lambda *_a: None, None)
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return False
    conn.close()
    return True


def require_libvirt(uri: str = "qemu:///system") -> None:
    if not libvirt_available(uri):
        missing(f"libvirtd at {uri}")


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (bind port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test; dropped afterwards. Yields its URL."""
    if not postgres_reachable():
        missing("PostgreSQL on 127.0.0.1:5432")
    import psycopg

    name = "stratus_test_" + uuid.uuid4().hex[:12]
    admin = PG_ADMIN_URL
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
