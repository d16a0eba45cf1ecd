"""Fixtures of the broker tests: the test PKI, a tiny image, a federation of processes, moto.

``moto_server`` is started once per session on 127.0.0.1 (a free port) and
reset before each test using it; without the binary those tests skip, or
fail under ``CI=true``.  Only loopback is used; the addresses moto makes up
are never connected to.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker.fedenv import Federation, FederationPki, free_port
from tests.federation.conftest import _moto_binary, _wait_http
from tests.helpers import missing, require_tool


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


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a ``moto_server`` (EC2 API) for this session."""
    binary = _moto_binary()
    if binary is None:
        missing("moto_server (pip install 'moto[server]')")
    assert binary is not None
    port = free_port()
    proc = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url + "/moto-api/data.json", time.monotonic() + 30)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def moto(moto_server: str) -> str:
    """The moto endpoint, emptied for this test."""
    request = urllib.request.Request(moto_server + "/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
    return moto_server
