"""Fixtures for the hypervisor driver tests.

``backend`` runs a test against every driver implementation:

* ``fake``          -- ``FakeDriver`` (in memory);
* ``libvirt-test``  -- ``LibvirtDriver`` on ``test:///default`` (libvirt's test
  driver; its state is shared by every connection of this process, so tests
  use random VM ids and clean up);
* ``libvirt-qemu``  -- ``LibvirtDriver`` on ``qemu:///system`` booting a real
  TCG guest (marked ``libvirt``). Without a reachable libvirtd these tests
  skip, or fail when ``CI=true``.

Every VM id a test gets from ``backend.spec()`` is undefined afterwards, and
every file lives in a per-test directory that is removed, even when the test
fails. Domains are named ``stratus-<random uuid>``, so sessions can run in
parallel on one machine.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from site_agent.compute.driver import DiskSpec, HypervisorDriver
from site_agent.compute.errors import ComputeError
from site_agent.compute.fake_driver import FakeDriver
from site_agent.compute.libvirt_driver import LibvirtDriver
from tests.helpers import missing
from tests.site_agent.compute.harness import (
    DEBIAN_CMDLINE,
    DEBIAN_INITRD,
    DEBIAN_KERNEL,
    QEMU_URI,
    TEST_URI,
    Backend,
    GuestBoot,
    make_workdir,
)


@pytest.fixture(scope="session")
def guest_boot() -> Iterator[GuestBoot]:
    """The real guest: ``site_agent.guest.builder.build_guest``, or else the Debian kernel.

    The Debian kernel + initrd boot to a shell and print kernel messages on
    ttyS0 but ignore the ACPI power button. ``STRATUS_TEST_GUEST=debian-kernel``
    forces that fallback.
    """
    workdir = make_workdir()
    try:
        build_guest: Callable[[Path], Any] | None
        try:
            from site_agent.guest.builder import build_guest
        except ImportError:
            build_guest = None
        if os.environ.get("STRATUS_TEST_GUEST") == "debian-kernel":
            build_guest = None  # force the fallback guest
        if build_guest is not None:
            image = build_guest(workdir)
            for path in (image.kernel, image.initrd, image.disk):
                Path(path).chmod(0o644)
            disk_format = "qcow2" if Path(image.disk).suffix == ".qcow2" else "raw"
            yield GuestBoot(
                flavour="busybox",
                kernel=Path(image.kernel),
                initrd=Path(image.initrd),
                cmdline=image.cmdline,
                root_disk=DiskSpec(path=Path(image.disk), target="vda", format=disk_format),
                # The guest boots with "quiet" and prints one ready line per boot
                # (after ~5 s of looking for a cidata seed, which these tests do not attach).
                boot_marker="STRATUS-READY",
                ready_marker="STRATUS-READY",
                acpi_poweroff=True,
                block_events=True,
            )
        else:
            if not (DEBIAN_KERNEL.exists() and DEBIAN_INITRD.exists()):
                missing(f"the Debian cloud kernel {DEBIAN_KERNEL}")
            kernel = Path(shutil.copy(DEBIAN_KERNEL, workdir / "vmlinuz"))
            initrd = Path(shutil.copy(DEBIAN_INITRD, workdir / "initrd.img"))
            kernel.chmod(0o644)
            initrd.chmod(0o644)
            yield GuestBoot(
                flavour="debian-kernel",
                kernel=kernel,
                initrd=initrd,
                cmdline=DEBIAN_CMDLINE,
                root_disk=None,
                boot_marker="Linux version",
                ready_marker="Run /bin/sh as init process",
                acpi_poweroff=False,
                block_events=False,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _make_backend(name: str, request: pytest.FixtureRequest, workdir: Path) -> Backend:
    if name == "fake":
        driver: HypervisorDriver = FakeDriver("fake://contract-host")
        await driver.connect()
        return Backend(name, driver, workdir)
    if name == "libvirt-test":
        driver = LibvirtDriver(TEST_URI)
        await driver.connect()
        return Backend(name, driver, workdir, hotplug=False, console=False)
    assert name == "libvirt-qemu"
    driver = LibvirtDriver(QEMU_URI)
    try:
        await driver.connect()
    except ComputeError as exc:
        missing(f"libvirtd at {QEMU_URI} ({exc})")
    if shutil.which("qemu-system-x86_64") is None:
        await driver.close()
        missing("qemu-system-x86_64")
    guest: GuestBoot = request.getfixturevalue("guest_boot")
    return Backend(name, driver, workdir, guest=guest, acpi_poweroff=guest.acpi_poweroff)


@pytest.fixture(
    params=["fake", "libvirt-test", pytest.param("libvirt-qemu", marks=pytest.mark.libvirt)]
)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """A connected driver of each kind; its domains and files are removed afterwards."""
    workdir = make_workdir()
    backend = None
    try:
        backend = await _make_backend(request.param, request, workdir)
        yield backend
    finally:
        errors: list[Exception] = []
        if backend is not None:
            await backend.driver.connect()
            for cleanup in reversed(backend.cleanups):
                try:
                    await cleanup()
                except Exception as exc:
                    errors.append(exc)
            for vm_id in backend.created:
                try:
                    await backend.driver.undefine(vm_id)
                except ComputeError as exc:
                    errors.append(exc)
            await backend.driver.close()
        shutil.rmtree(workdir, ignore_errors=True)
        if errors:
            pytest.fail(f"cleanup failed: {errors}")
