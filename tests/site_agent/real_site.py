"""Shared set-up for tests that run real QEMU guests through libvirtd."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
