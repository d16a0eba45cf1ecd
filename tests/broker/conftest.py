"""Fixtures of the broker tests: the test PKI, a tiny image, a federation of processes, moto.

``moto_server`` is started once per session on 127.0.0.1 (a free port) and
reset before each test using it; without the binary those tests skip, or
fail under ``CI=true``.  Only loopback is used; the addresses moto makes up
are never connected to.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker.fedenv import Federation, FederationPki
from tests.helpers import require_tool


@pytest.fixture(scope="session")
def fed_pki(tmp_path_factory: pytest.TempPathFactory) -> FederationPki:
    return FederationPki.create(tmp_path_factory.mktemp("fedpki"))


@pytest.fixture(scope="session")
def tiny_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16 MiB qcow2 'image' (fake hosts do not boot it)."""
    qemu_img = require_tool("qemu-img")
    path = tmp_path_factory.mktemp("images") / "tiny.qcow2"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)
    return path


@pytest.fixture
def federation(tmp_path: Path, fed_pki: FederationPki) -> Iterator[Federation]:
    """A federation of processes on loopback; every process is stopped afterwards."""
    fed = Federation(tmp_path, fed_pki)
    try:
        yield fed
    finally:
        fed.close()
