"""Test harness for the hypervisor driver tests: the ``Backend`` wrapper and polling helpers.

Fixtures live in ``conftest.py``; this module holds what test modules import.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from site_agent.compute.driver import DiskSpec, DomainSpec, HypervisorDriver
from site_agent.compute.fake_driver import FakeDriver
from tests.helpers import missing

# Overridable, e.g. to check that an unreachable libvirtd skips (or fails with CI=true).
QEMU_URI = os.environ.get("STRATUS_TEST_QEMU_URI", "qemu:///system")
TEST_URI = "test:///default"
DEBIAN_KERNEL = Path("/boot/vmlinuz-6.1.0-56-cloud-amd64")
DEBIAN_INITRD = Path("/boot/initrd.img-6.1.0-56-cloud-amd64")
# No root device: the Debian initramfs would panic and (panic=-1) reboot in a loop;
# rdinit=/bin/sh keeps the guest in a busybox shell, running steadily, after the kernel boot.
DEBIAN_CMDLINE = "console=ttyS0 panic=-1 rdinit=/bin/sh"
BOOT_TIMEOUT = 90.0  # TCG on a busy 2-core machine


def make_workdir() -> Path:
    """A fresh directory QEMU (running as libvirt-qemu) can traverse: pytest's tmp is 0700."""
    path = Path(tempfile.mkdtemp(prefix="stratus-compute-test-"))
    path.chmod(0o755)
    return path


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.1
) -> float:
    """Poll ``predicate`` until true; return the seconds it took, fail after ``timeout``."""
    start = time.monotonic()
    while True:
        if await predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def read_log(path: Path | None) -> str:
    if path is None or not path.exists():
        return ""
    return path.read_text(encoding="utf-8", errors="replace")


@dataclass(frozen=True)
class GuestBoot:
    """How the real guest is booted, and how to tell from its console that it is up."""

    flavour: str  # "busybox" (site_agent.guest) or "debian-kernel"
    kernel: Path
    initrd: Path
    cmdline: str
    root_disk: DiskSpec | None  # each VM gets a copy-on-write overlay of it as vda
    boot_marker: str  # printed once per boot
    ready_marker: str  # printed when the guest is ready for hot-plug and ACPI events
    acpi_poweroff: bool  # the guest powers off on the ACPI power button
    block_events: bool  # the guest prints "STRATUS-BLOCK add|remove <dev>" on hot-plug


@dataclass
class Backend:
    """One driver under test plus what the contract tests need to know about it."""

    name: str
    driver: HypervisorDriver
    workdir: Path
    guest: GuestBoot | None = None  # set for real guests
    hotplug: bool = True  # attach/detach supported
    acpi_poweroff: bool = True  # shutdown() really stops the guest
    console: bool = True  # something writes spec.console_log
    created: list[str] = field(default_factory=list)
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def real(self) -> bool:
        return self.guest is not None

    def spec(self, **overrides: Any) -> DomainSpec:
        """A bootable spec with a fresh random VM id (undefined after the test)."""
        vm_id = str(uuid.uuid4())
        self.created.append(vm_id)
        base = DomainSpec(
            vm_id=vm_id, vcpus=1, memory_mib=192, console_log=self.workdir / f"{vm_id}.log"
        )
        if self.guest is not None:
            disks: tuple[DiskSpec, ...] = ()
            root = self.guest.root_disk
            if root is not None:
                overlay = self.workdir / f"{vm_id}-root.qcow2"
                self._qemu_img_create(
                    "-f", "qcow2", "-b", str(root.path), "-F", root.format, str(overlay)
                )
                disks = (replace(root, path=overlay, format="qcow2"),)
            base = replace(
                base,
                kernel=self.guest.kernel,
                initrd=self.guest.initrd,
                cmdline=self.guest.cmdline,
                disks=disks,
            )
        return replace(base, **overrides)

    @staticmethod
    def _qemu_img_create(*args: str) -> None:
        qemu_img = shutil.which("qemu-img")
        if qemu_img is None:
            missing("qemu-img")
        assert qemu_img is not None
        subprocess.run([qemu_img, "create", "-q", *args], check=True, timeout=60)

    def disk(self, target: str = "vdb") -> DiskSpec:
        """A fresh, empty qcow2 disk file (``qemu-img create``) at guest device ``target``."""
        path = self.workdir / f"{uuid.uuid4()}.qcow2"
        if self.real or shutil.which("qemu-img"):
            self._qemu_img_create("-f", "qcow2", str(path), "16M")
        else:
            path.write_bytes(b"")  # fake / test driver: never opened
        path.chmod(0o644)
        return DiskSpec(path=path, target=target)

    def failing_spec(self) -> DomainSpec:
        """A spec whose start fails after the domain was defined (when the backend allows)."""
        if isinstance(self.driver, FakeDriver):
            self.driver.fail_next_start = "injected failure"
            return self.spec()
        if self.real:
            # QEMU refuses to start without the disk file: define works, create fails.
            missing_disk = DiskSpec(path=self.workdir / "no-such-disk.qcow2", target="vdz")
            spec = self.spec()
            return replace(spec, disks=(*spec.disks, missing_disk))
        # The test driver starts anything it can define; this fails at define time.
        # (The create-failure rollback on this driver is tested in test_libvirt_driver.py.)
        return self.spec(memory_mib=0)

    async def define_foreign(self) -> str | None:
        """Define (not start) a domain NOT named ``stratus-...``; its name, or None for the fake."""
        if isinstance(self.driver, FakeDriver):
            return None
        import libvirt

        name = f"other-{uuid.uuid4()}"
        root = ET.Element("domain", type="test" if self.driver.uri.startswith("test:") else "qemu")
        ET.SubElement(root, "name").text = name
        ET.SubElement(root, "memory", unit="MiB").text = "64"
        os_el = ET.SubElement(root, "os")
        ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
        uri = self.driver.uri

        def define() -> None:
            conn = libvirt.open(uri)
            try:
                conn.defineXML(ET.tostring(root, encoding="unicode"))
            finally:
                conn.close()

        def undefine() -> None:
            conn = libvirt.open(uri)
            try:
                conn.lookupByName(name).undefine()
            finally:
                conn.close()

        await asyncio.to_thread(define)

        async def cleanup() -> None:
            await asyncio.to_thread(undefine)

        self.cleanups.append(cleanup)
        return name

    async def disk_targets(self, vm_id: str) -> set[str]:
        """Guest device names of the disks the running domain has now (seen by the hypervisor)."""
        if isinstance(self.driver, FakeDriver):
            return set(self.driver.domains[vm_id].disks)
        import libvirt

        uri = self.driver.uri

        def targets() -> set[str]:
            conn = libvirt.open(uri)
            try:
                root = ET.fromstring(conn.lookupByName("stratus-" + vm_id).XMLDesc(0))
            finally:
                conn.close()
            return {t.get("dev", "") for t in root.iterfind("./devices/disk/target")}

        return await asyncio.to_thread(targets)

    async def wait_ready(self, spec: DomainSpec, boots: int = 1) -> float:
        """Wait until the console shows ``boots`` boots and the guest is ready; seconds taken."""
        if self.guest is None:
            return 0.0
        guest = self.guest

        async def ready() -> bool:
            log = read_log(spec.console_log)
            start = -1
            for _ in range(boots):  # where boot number ``boots`` begins
                start = log.find(guest.boot_marker, start + 1)
                if start < 0:
                    return False
            return guest.ready_marker in log[start:]

        return await wait_for(ready, BOOT_TIMEOUT, f"guest {spec.vm_id} boot #{boots}")
