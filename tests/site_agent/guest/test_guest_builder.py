"""The guest image builder: contents, module order, caching, reproducibility, host checks."""

from __future__ import annotations

import dataclasses
import gzip
import shutil
import subprocess
from pathlib import Path

import pytest

from site_agent.guest import GuestImage, MissingHostComponent, build_guest
from site_agent.guest.builder import (
    GUEST_MODULES,
    build_initramfs,
    find_kernel_version,
    is_static_elf,
    resolve_modules,
)
from site_agent.guest.cpio import CpioArchive
from tests.helpers import require_tool


def _listing(initrd: Path) -> dict[str, str]:
    """Member name -> ``ls -l`` style mode string, as GNU cpio reads the archive."""
    cpio = require_tool("cpio")
    result = subprocess.run(
        [cpio, "-itv", "--quiet"], input=gzip.decompress(initrd.read_bytes()),
        capture_output=True, check=True,
    )  # fmt: skip
    listing = {}
    for line in result.stdout.decode().splitlines():
        fields = line.split()
        name = fields[-3] if fields[-2] == "->" else fields[-1]
        listing[name] = fields[0]
    return listing


def test_outputs_and_modes(guest_image: GuestImage) -> None:
    assert guest_image.kernel.name == "vmlinuz"
    assert guest_image.initrd.name == "initrd.img"
    assert guest_image.disk.name == "disk.qcow2"
    for path in (guest_image.kernel, guest_image.initrd, guest_image.disk):
        assert path.stat().st_mode & 0o777 == 0o644, path
    assert "console=ttyS0" in guest_image.cmdline.split()
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(guest_image.disk)],
        capture_output=True, check=True, text=True,
    ).stdout  # fmt: skip
    assert '"format": "qcow2"' in info
    assert '"virtual-size": 33554432' in info
    with pytest.raises(dataclasses.FrozenInstanceError):
        guest_image.cmdline = "x"  # type: ignore[misc]


def test_initramfs_contents(guest_image: GuestImage) -> None:
    listing = _listing(guest_image.initrd)
    assert listing["init"].startswith("l")  # -> bin/busybox
    assert listing["dev/console"].startswith("c")
    assert listing["bin/busybox"].startswith("-rwx")
    for name in ("bin/sh", "sbin/acpid", "sbin/ip", "bin/mount", "sbin/insmod"):
        assert name in listing, name
    for name in ("etc/inittab", "usr/lib/stratus/agent.sh", "etc/acpi/power-button.sh"):
        assert name in listing, name
    assert listing["usr/lib/stratus/agent.sh"].startswith("-rwx")
    assert listing["tmp"] == "drwxrwxrwt"


def _member(initrd: Path, name: str) -> str:
    cpio = require_tool("cpio")
    result = subprocess.run(
        [cpio, "-i", "--to-stdout", "--quiet", name],
        input=gzip.decompress(initrd.read_bytes()), capture_output=True, check=True,
    )  # fmt: skip
    return result.stdout.decode()


def test_modules_are_loaded_in_dependency_order(guest_image: GuestImage) -> None:
    text = _member(guest_image.initrd, "etc/stratus/modules.txt")
    names = [line.rsplit("/", 1)[-1].removesuffix(".ko") for line in text.split()]
    for module in ("virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev",
                   "virtio_pci", "virtio_blk", "failover", "net_failover", "virtio_net",
                   "cdrom", "isofs", "button", "evdev"):  # fmt: skip
        assert module in names, module
    before = [
        ("virtio_ring", "virtio"), ("virtio", "virtio_pci"),
        ("virtio_pci_legacy_dev", "virtio_pci"), ("virtio_pci_modern_dev", "virtio_pci"),
        ("virtio", "virtio_blk"), ("failover", "net_failover"), ("net_failover", "virtio_net"),
        ("cdrom", "isofs"),
    ]  # fmt: skip
    for first, then in before:
        assert names.index(first) < names.index(then), (first, then)
    assert len(names) == len(set(names))


def test_rebuild_is_a_cached_no_op(tmp_path: Path, guest_image: GuestImage) -> None:
    out = tmp_path / "guest"
    first = build_guest(out)
    stamps = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    second = build_guest(out)
    assert second == first
    # Nothing was rebuilt: every file is the one the first build wrote.
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    # Reproducible: an independent build yields the same initramfs bytes.
    assert first.initrd.read_bytes() == guest_image.initrd.read_bytes()


def test_damaged_output_is_rebuilt(tmp_path: Path) -> None:
    out = tmp_path / "guest"
    image = build_guest(out)
    good = image.initrd.read_bytes()
    image.initrd.write_bytes(b"garbage")
    image.disk.unlink()
    build_guest(out)
    assert image.initrd.read_bytes() == good
    assert image.disk.is_file()


def test_kernel_copy_is_world_readable_even_if_source_is_not(tmp_path: Path) -> None:
    version = find_kernel_version()
    boot = tmp_path / "boot"
    boot.mkdir()
    private = boot / f"vmlinuz-{version}"
    shutil.copyfile(f"/boot/vmlinuz-{version}", private)
    private.chmod(0o600)
    image = build_guest(tmp_path / "out", kernel_version=version, boot_dir=boot)
    assert image.kernel.stat().st_mode & 0o777 == 0o644
    assert image.kernel.read_bytes() == private.read_bytes()


def test_only_output_dir_is_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    build_guest(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert {p.name for p in out.iterdir()} == {
        "vmlinuz", "initrd.img", "disk.qcow2", ".stratus-guest.stamp", ".stratus-guest.lock",
    }  # fmt: skip


def test_dynamic_busybox_is_refused(tmp_path: Path) -> None:
    dynamic = Path(shutil.which("ls") or "/bin/ls")
    assert not is_static_elf(dynamic)
    with pytest.raises(MissingHostComponent, match="busybox-static"):
        build_guest(tmp_path / "out", busybox=dynamic)


def test_missing_kernel_is_reported(tmp_path: Path) -> None:
    with pytest.raises(MissingHostComponent, match="linux-image"):
        build_guest(tmp_path / "out", boot_dir=tmp_path / "empty")


def _fake_modules(tmp_path: Path, dep: str, builtin: str = "") -> Path:
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "modules.dep").write_text(dep)
    (modules / "modules.builtin").write_text(builtin)
    return modules


def test_resolve_modules_orders_dependencies_first(tmp_path: Path) -> None:
    modules = _fake_modules(
        tmp_path,
        "kernel/c.ko.xz: kernel/b.ko kernel/a.ko\n"
        "kernel/b.ko: kernel/a.ko\n"
        "kernel/a.ko:\n"
        "kernel/d-e.ko: kernel/a.ko\n",
        builtin="kernel/builtin_mod.ko\n",
    )
    assert resolve_modules(modules, ["c", "d_e", "builtin_mod", "a"]) == [
        "kernel/a.ko", "kernel/b.ko", "kernel/c.ko.xz", "kernel/d-e.ko",
    ]  # fmt: skip
    with pytest.raises(MissingHostComponent, match="nowhere"):
        resolve_modules(modules, ["nowhere"])


def test_real_modules_dep_resolves_every_guest_module() -> None:
    version = find_kernel_version()
    order = resolve_modules(Path("/lib/modules") / version, GUEST_MODULES)
    assert len(order) >= len(GUEST_MODULES)
    assert all(p.startswith("kernel/") for p in order)


def test_initramfs_is_reproducible() -> None:
    version = find_kernel_version()
    modules = Path("/lib/modules") / version
    order = resolve_modules(modules, GUEST_MODULES)
    busybox = Path(require_tool("busybox"))
    assert build_initramfs(version, modules, order, busybox) == build_initramfs(
        version, modules, order, busybox
    )


def test_cpio_archive_rejects_duplicates_and_pads() -> None:
    archive = CpioArchive()
    archive.add_dir("etc")
    archive.add_file("etc/a", b"abc")
    with pytest.raises(ValueError, match="duplicate"):
        archive.add_file("/etc/a/", b"x")
    data = archive.to_bytes()
    assert data.startswith(b"070701")
    assert len(data) % 4 == 0
    assert data.rstrip(b"\0").endswith(b"TRAILER!!!")


def test_relative_output_dir_gives_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    image = build_guest(Path("relative-out"))
    for path in (image.kernel, image.initrd, image.disk):
        assert path.is_absolute()
        assert path.parent == tmp_path / "relative-out"
