"""Shared set-up for tests that run real QEMU guests through libvirtd."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from site_agent.guest.builder import GuestImage, build_guest
from site_agent.guest.site_image import DEFAULT_GUEST_DIR

LIBVIRT_URI = "qemu:///system"


def guest() -> GuestImage:
    """The busybox guest (built once, cached where `make guest` puts it)."""
    return build_guest(DEFAULT_GUEST_DIR)


@contextmanager
def qemu_reachable_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory QEMU (user libvirt-qemu) can reach: pytest's tmp dirs are 0700."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def stratus_domains() -> set[str]:
    """VM ids of every Stratus domain libvirt knows on this machine."""
    import libvirt

    conn = libvirt.open(LIBVIRT_URI)
    try:
        return {
            d.name().removeprefix("stratus-")
            for d in conn.listAllDomains()
            if d.name().startswith("stratus-")
        }
    finally:
        conn.close()


async def wait_for_console(
    client: TestClient,
    vm_id: str,
    line: str,
    *,
    headers: Mapping[str, str],
    times: int = 1,
    timeout: float = 60.0,
) -> str:
    """The VM's console once ``line`` is on it ``times`` times; the test fails at ``timeout``.

    The guest writes its console asynchronously (the readiness line, then
    user-data output in the background; the serial log goes through virtlogd),
    so a test waits for exactly the line it asserts instead of reading the
    console once right after some other signal.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        resp = await client.get(f"/api/v1/vms/{vm_id}/console", headers=dict(headers))
        assert resp.status == 200, await resp.text()
        output: str = (await resp.json())["output"]
        if output.count(line) >= times:
            return output
        if loop.time() > deadline:
            pytest.fail(
                f"{line!r} not {times}x on the console of {vm_id} after {timeout}s:\n{output}"
            )
        await asyncio.sleep(0.1)
