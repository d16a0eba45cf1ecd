"""Offering the built guest as a site image: the ``[[images]]`` TOML entry for it."""

from __future__ import annotations

import os
from pathlib import Path

from site_agent.guest.builder import GuestImage

# Where `make guest`, the demo, the benchmarks and the tests keep the built guest.
# Outside the checkout on purpose: QEMU runs as libvirt-qemu and must be able to
# traverse every directory above the kernel and disk, whatever the clone's path.
DEFAULT_GUEST_DIR = Path(os.environ.get("STRATUS_GUEST_DIR", "/var/tmp/stratus-guest"))


def guest_image_toml(image: GuestImage, name: str = "busybox") -> str:
    """An ``[[images]]`` table for a site config that boots ``image`` by direct kernel boot."""
    fmt = "raw" if image.disk.suffix in (".raw", ".img") else "qcow2"
    return (
        f'[[images]]\nname = "{name}"\ndisk = "{image.disk}"\nformat = "{fmt}"\n'
        f'kernel = "{image.kernel}"\ninitrd = "{image.initrd}"\ncmdline = "{image.cmdline}"\n'
        'description = "busybox test guest (stratus image build-guest)"\n'
    )
