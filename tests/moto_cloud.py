"""A ``moto_server`` (EC2 API) on loopback, shared by the whole test session.

Registered by ``tests/conftest.py`` (``pytest_plugins``). moto hands out
made-up public/private addresses: they are data only, nothing connects to them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port, missing


def moto_binary() -> str | None:
    beside = Path(sys.executable).parent / "moto_server"
    if beside.exists():
        return str(beside)
    return shutil.which("moto_server")


def wait_http(url: str, deadline: float) -> None:
    """Poll ``url`` until it answers, or raise once ``deadline`` (monotonic) passes."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                resp.read()
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a ``moto_server`` started for this session."""
    binary = moto_binary()
    if binary is None:
        missing("moto_server (pip install 'moto[server]')")
    assert binary is not None
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    proc = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/moto-api/data.json", time.monotonic() + 30)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def moto(moto_endpoint: str) -> str:
    """The moto endpoint, reset to an empty state for this test."""
    req = urllib.request.Request(moto_endpoint + "/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()
    return moto_endpoint
