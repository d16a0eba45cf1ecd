"""Offering the built guest as a site image: the ``[[images]]`` TOML entry for it."""

from __future__ import annotations

from site_agent.guest.builder import GuestImage


def guest_image_toml(image: GuestImage, name: str = "busybox") -> str:
    """An ``[[images]]`` table for a site config that boots ``image`` by direct kernel boot."""
    fmt = "raw" if image.disk.suffix in (".raw", ".img") else "qcow2"
    return (
        f'[[images]]\nname = "{name}"\ndisk = "{image.disk}"\nformat = "{fmt}"\n'
        f'kernel = "{image.kernel}"\ninitrd = "{image.initrd}"\ncmdline = "{image.cmdline}"\n'
        'description = "busybox test guest (stratus image build-guest)"\n'
    )
