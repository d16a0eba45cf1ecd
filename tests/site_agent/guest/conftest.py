"""Fixtures for guest image tests: the built image and real QEMU (TCG) guests.

Guests run with plain ``qemu-system-x86_64 -accel tcg`` (no libvirt), see
``qemu_guest.py``. A missing qemu, qemu-img or busybox fails the tests when
``CI=true`` and skips them otherwise (``tests.helpers.require_tool``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from site_agent.guest import GuestImage, MissingHostComponent, build_guest
from tests.helpers import missing, require_tool
from tests.site_agent.guest.qemu_guest import QemuGuest

QEMU = "qemu-system-x86_64"


@pytest.fixture(scope="session")
def qemu_binary() -> str:
    return require_tool(QEMU)


@pytest.fixture(scope="session")
def guest_image(tmp_path_factory: pytest.TempPathFactory) -> GuestImage:
    """The guest image, built once per session (busybox-static and a kernel are needed)."""
    require_tool("qemu-img")
    try:
        return build_guest(tmp_path_factory.mktemp("guest-image"))
    except MissingHostComponent as exc:
        missing(str(exc))
        raise


BootGuest = Callable[..., QemuGuest]


@pytest.fixture
def boot_guest(qemu_binary: str, guest_image: GuestImage, tmp_path: Path) -> Iterator[BootGuest]:
    """Factory: ``boot_guest(seed=path_or_None, mac=None)`` starts a guest, killed at teardown."""
    guests: list[QemuGuest] = []

    def boot(*, seed: Path | None, mac: str | None = None) -> QemuGuest:
        workdir = tmp_path / f"vm{len(guests)}"
        workdir.mkdir()
        guest = QemuGuest(qemu_binary, guest_image, workdir, seed=seed, mac=mac)
        guests.append(guest)
        return guest

    yield boot
    for guest in guests:
        guest.close()
