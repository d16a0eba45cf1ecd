"""Build the Stratus test/demo guest from local Debian packages (no download).

The guest is three files plus a kernel command line, produced by
:func:`build_guest` in an output directory:

``vmlinuz``
    a copy (mode 0644) of the installed distribution kernel
    (``linux-image-cloud-amd64`` by preference), booted directly by QEMU;
``initrd.img``
    a gzip-compressed ``newc`` cpio initramfs holding busybox-static, the
    kernel modules the guest needs (virtio PCI/block/net, isofs, ACPI button,
    evdev, with their dependencies, loaded in ``modules.dep`` order) and the
    Stratus init scripts and context agent (``site_agent/guest/files``). The
    guest runs entirely from it;
``disk.qcow2``
    a small empty qcow2 disk the VM gets as ``vda``; nothing in the guest
    depends on it, it only gives the VM a root disk to attach, snapshot or
    overlay like any real image.

Builds are cached: a stamp file records a digest of every input (kernel,
modules, busybox, packed files, command line, the builder's own source) and of
every output; calling :func:`build_guest` again with the same inputs and intact
outputs writes nothing and returns at once. Concurrent builders of the same
directory are serialised with a lock file. Only ``output_dir`` is written.

See ``docs/guest-image.md`` for the guest side (console protocol, seed format).
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from site_agent.guest import cpio as cpio_module
from site_agent.guest.cpio import CpioArchive
from site_agent.guest.errors import GuestImageError, MissingHostComponent

BUILDER_VERSION = 1

#: Kernel command line for direct kernel boot. ``quiet`` keeps the console for
#: the protocol lines; ``mitigations=off`` saves ~0.3 s under TCG and costs
#: nothing in a single-user guest whose processes all run as root.
DEFAULT_CMDLINE = "console=ttyS0 quiet panic=-1 mitigations=off"

#: Modules the guest loads (dependencies are added from ``modules.dep``).
GUEST_MODULES: tuple[str, ...] = (
    "virtio_pci",  # + virtio, virtio_ring, virtio_pci_legacy_dev, virtio_pci_modern_dev
    "virtio_blk",  # root disk, cidata seed, hot-plugged disks
    "virtio_net",  # + failover, net_failover
    "isofs",  # + cdrom: the cidata ISO9660 volume
    "button",  # ACPI power button -> input event
    "evdev",  # /dev/input/event* for busybox acpid
)

DISK_NAME = "disk.qcow2"
DISK_SIZE_MIB = 32
KERNEL_NAME = "vmlinuz"
INITRD_NAME = "initrd.img"
STAMP_NAME = ".stratus-guest.stamp"
LOCK_NAME = ".stratus-guest.lock"

DEFAULT_BOOT_DIR = Path("/boot")
DEFAULT_MODULES_ROOT = Path("/lib/modules")

#: Package files packed into the initramfs: resource name -> (guest path, mode).
_PACKED_FILES: dict[str, tuple[str, int]] = {
    "inittab.txt": ("etc/inittab", 0o644),
    "rcS.sh": ("usr/lib/stratus/rcS.sh", 0o755),
    "agent.sh": ("usr/lib/stratus/agent.sh", 0o755),
    "shutdown.sh": ("usr/lib/stratus/shutdown.sh", 0o755),
    "acpid.conf.txt": ("etc/acpid.conf", 0o644),
    "power-button.sh": ("etc/acpi/power-button.sh", 0o755),
}

_MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.gz")


@dataclass(frozen=True)
class GuestImage:
    """A built guest: boot ``kernel`` with ``initrd`` and ``cmdline``, attach ``disk`` as vda."""

    kernel: Path
    initrd: Path
    disk: Path
    cmdline: str


def build_guest(
    output_dir: Path,
    *,
    kernel_version: str | None = None,
    boot_dir: Path = DEFAULT_BOOT_DIR,
    modules_root: Path = DEFAULT_MODULES_ROOT,
    busybox: Path | None = None,
) -> GuestImage:
    """Build (or reuse) the guest image in ``output_dir`` and describe it.

    ``kernel_version`` selects ``<boot_dir>/vmlinuz-<version>`` with modules
    in ``<modules_root>/<version>``; by default the newest installed kernel
    that has modules, preferring ``*-cloud-*`` flavours. ``busybox`` defaults
    to the ``busybox`` on ``PATH`` and must be statically linked
    (Debian ``busybox-static``).

    Idempotent: if the stamp in ``output_dir`` matches the current inputs and
    the outputs are intact, nothing is written. The returned paths are
    absolute (a relative ``output_dir`` is taken from the current directory). Raises
    :class:`MissingHostComponent` when a needed host package is missing and
    :class:`GuestImageError` for other build failures.
    """
    output_dir = Path(output_dir).absolute()
    output_dir.mkdir(parents=True, exist_ok=True)
    version = kernel_version or find_kernel_version(boot_dir, modules_root)
    kernel_src = boot_dir / f"vmlinuz-{version}"
    modules_dir = modules_root / version
    if not kernel_src.is_file():
        raise MissingHostComponent(f"kernel {kernel_src} not found (linux-image-cloud-amd64)")
    if not (modules_dir / "modules.dep").is_file():
        raise MissingHostComponent(f"{modules_dir}/modules.dep not found (kernel modules)")
    busybox_path = _find_busybox(busybox)
    module_order = resolve_modules(modules_dir, GUEST_MODULES)

    image = GuestImage(
        kernel=output_dir / KERNEL_NAME,
        initrd=output_dir / INITRD_NAME,
        disk=output_dir / DISK_NAME,
        cmdline=DEFAULT_CMDLINE,
    )
    with _locked(output_dir / LOCK_NAME):
        digest = _inputs_digest(version, kernel_src, busybox_path, modules_dir, module_order)
        if _stamp_matches(output_dir, digest, image):
            return image
        _remove(output_dir / STAMP_NAME)
        initramfs = build_initramfs(version, modules_dir, module_order, busybox_path)
        _atomic_write(image.initrd, initramfs)
        _atomic_write(image.kernel, kernel_src.read_bytes())
        _create_disk(image.disk)
        _write_stamp(output_dir, digest, image)
    return image


# ---------------------------------------------------------------- kernel & modules


def _version_key(version: str) -> tuple[tuple[int, str], ...]:
    return tuple((int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.\-+~]", version))


def find_kernel_version(
    boot_dir: Path = DEFAULT_BOOT_DIR, modules_root: Path = DEFAULT_MODULES_ROOT
) -> str:
    """Return the kernel release to use: newest ``vmlinuz-*`` with modules, cloud flavour first."""
    candidates = []
    for kernel in boot_dir.glob("vmlinuz-*"):
        version = kernel.name.removeprefix("vmlinuz-")
        if (modules_root / version / "modules.dep").is_file():
            candidates.append(version)
    if not candidates:
        raise MissingHostComponent(
            f"no kernel with modules in {boot_dir} and {modules_root} "
            "(install linux-image-cloud-amd64)"
        )
    candidates.sort(key=lambda v: ("-cloud-" in v, _version_key(v)))
    return candidates[-1]


def _module_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    for suffix in _MODULE_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def _parse_modules_dep(modules_dir: Path) -> dict[str, tuple[str, list[str]]]:
    """Map module name -> (relative path, relative paths of its dependencies)."""
    table: dict[str, tuple[str, list[str]]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        if ":" not in line:
            continue
        path, _, deps = line.partition(":")
        table[_module_name(path)] = (path.strip(), deps.split())
    return table


def _builtin_modules(modules_dir: Path) -> set[str]:
    builtin = modules_dir / "modules.builtin"
    if not builtin.is_file():
        return set()
    return {_module_name(line) for line in builtin.read_text().split()}


def resolve_modules(modules_dir: Path, wanted: Iterable[str]) -> list[str]:
    """Return the relative paths of ``wanted`` modules and their dependencies, in load order.

    Every module comes after all of its dependencies (depth-first over
    ``modules.dep``); modules built into the kernel are skipped; a module that
    is neither built in nor in ``modules.dep`` raises :class:`MissingHostComponent`.
    """
    table = _parse_modules_dep(modules_dir)
    builtin = _builtin_modules(modules_dir)
    by_path = {path: name for name, (path, _) in table.items()}
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in visiting or table[name][0] in order:
            return
        visiting.add(name)
        path, deps = table[name]
        for dep in reversed(deps):
            dep_name = by_path.get(dep, _module_name(dep))
            if dep_name not in table:
                raise MissingHostComponent(f"module {dep} (needed by {name}) not in modules.dep")
            visit(dep_name)
        order.append(path)

    for module in wanted:
        name = module.replace("-", "_")
        if name in table:
            visit(name)
        elif name not in builtin:
            raise MissingHostComponent(f"kernel module {module} not found in {modules_dir}")
    return order


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    return data


def _plain_ko(relpath: str) -> str:
    for suffix in (".ko.xz", ".ko.gz"):
        if relpath.endswith(suffix):
            return relpath[: -len(suffix)] + ".ko"
    return relpath


# ---------------------------------------------------------------- busybox


def _find_busybox(explicit: Path | None) -> Path:
    if explicit is not None:
        path = explicit
    else:
        found = shutil.which("busybox") or next(
            (p for p in ("/bin/busybox", "/usr/bin/busybox") if os.path.isfile(p)), None
        )
        if found is None:
            raise MissingHostComponent("busybox not found (install busybox-static)")
        path = Path(found)
    if not path.is_file():
        raise MissingHostComponent(f"busybox {path} not found (install busybox-static)")
    if not is_static_elf(path):
        raise MissingHostComponent(f"{path} is dynamically linked; the guest needs busybox-static")
    return path


def is_static_elf(path: Path) -> bool:
    """True if ``path`` is a 64-bit little-endian ELF executable without a program interpreter."""
    with path.open("rb") as fh:
        header = fh.read(64)
        if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
            return False
        (phoff,) = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        fh.seek(phoff)
        table = fh.read(phentsize * phnum)
    for index in range(phnum):
        (p_type,) = struct.unpack_from("<I", table, index * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def _busybox_applets(busybox: Path) -> list[str]:
    try:
        result = subprocess.run(
            [str(busybox), "--list-full"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise GuestImageError(f"cannot list busybox applets: {exc}") from exc
    return sorted({line.strip().strip("/") for line in result.stdout.splitlines() if line.strip()})


# ---------------------------------------------------------------- initramfs


def _package_file(name: str) -> bytes:
    return (resources.files("site_agent.guest") / "files" / name).read_bytes()


def _dirs_for(path: str) -> Iterator[str]:
    parts = path.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        yield "/".join(parts[:i])


def build_initramfs(
    kernel_version: str, modules_dir: Path, module_order: Sequence[str], busybox: Path
) -> bytes:
    """Return the gzip-compressed cpio initramfs (reproducible: same inputs, same bytes)."""
    archive = CpioArchive()

    def ensure_dirs(path: str) -> None:
        for directory in _dirs_for(path):
            if directory not in archive:
                archive.add_dir(directory)

    for directory in (
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "dev",
        "proc",
        "sys",
        "run",
        "mnt",
        "etc/stratus",
        "var/log",
    ):
        ensure_dirs(directory + "/x")
    archive.add_dir("tmp", 0o1777)
    archive.add_dir("root", 0o700)
    archive.add_chardev("dev/console", 5, 1)
    archive.add_chardev("dev/null", 1, 3, 0o666)

    archive.add_file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in _busybox_applets(busybox):
        if "/" not in applet or applet in archive:
            continue  # "linuxrc" at the root, or already present
        ensure_dirs(applet)
        depth = applet.count("/")
        archive.add_symlink(applet, "../" * depth + "bin/busybox")
    archive.add_symlink("init", "bin/busybox")  # busybox init reads /etc/inittab

    for resource, (guest_path, mode) in _PACKED_FILES.items():
        ensure_dirs(guest_path)
        archive.add_file(guest_path, _package_file(resource), mode)

    module_base = f"lib/modules/{kernel_version}"
    plain = [_plain_ko(path) for path in module_order]
    for source, target in zip(module_order, plain, strict=True):
        ensure_dirs(f"{module_base}/{target}")
        archive.add_file(f"{module_base}/{target}", _read_module(modules_dir / source))
    deps = _parse_modules_dep(modules_dir)
    dep_lines = []
    for source, target in zip(module_order, plain, strict=True):
        _, dep_paths = deps[_module_name(source)]
        dep_lines.append(f"{target}: {' '.join(_plain_ko(d) for d in dep_paths)}".rstrip())
    archive.add_file(f"{module_base}/modules.dep", ("\n".join(dep_lines) + "\n").encode())
    archive.add_file("etc/stratus/modules.txt", ("\n".join(plain) + "\n").encode())

    archive.add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    archive.add_file("etc/group", b"root:x:0:\ntty:x:5:\n")
    archive.add_file("etc/hostname", b"stratus-guest\n")
    archive.add_file("etc/hosts", b"127.0.0.1 localhost\n")
    archive.add_file(
        "etc/stratus/image",
        f"STRATUS_GUEST_BUILDER={BUILDER_VERSION}\nSTRATUS_GUEST_KERNEL={kernel_version}\n".encode(),
    )
    return archive.to_gzip()


# ---------------------------------------------------------------- disk


def _create_disk(path: Path) -> None:
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        raise MissingHostComponent("qemu-img not found (install qemu-utils)")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        subprocess.run(
            [qemu_img, "create", "-q", "-f", "qcow2", str(tmp), f"{DISK_SIZE_MIB}M"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        tmp.chmod(0o644)
        os.replace(tmp, path)
    except (OSError, subprocess.SubprocessError) as exc:
        _remove(tmp)
        raise GuestImageError(f"cannot create {path}: {exc}") from exc


# ---------------------------------------------------------------- cache & files


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _inputs_digest(
    kernel_version: str,
    kernel: Path,
    busybox: Path,
    modules_dir: Path,
    module_order: Sequence[str],
) -> str:
    digest = hashlib.sha256()

    def feed(label: str, value: str) -> None:
        digest.update(f"{label}\0{value}\n".encode())

    feed("builder", str(BUILDER_VERSION))
    for source in (Path(__file__), Path(cpio_module.__file__)):  # code changes rebuild too
        feed(f"source:{source.name}", _sha256_file(source))
    feed("kernel_version", kernel_version)
    feed("cmdline", DEFAULT_CMDLINE)
    feed("disk", f"{DISK_NAME}:{DISK_SIZE_MIB}")
    feed("kernel", _sha256_file(kernel))
    feed("busybox", _sha256_file(busybox))
    feed("modules.dep", _sha256_file(modules_dir / "modules.dep"))
    for module in module_order:
        feed(f"module:{module}", _sha256_file(modules_dir / module))
    for resource in sorted(_PACKED_FILES):
        feed(f"file:{resource}", hashlib.sha256(_package_file(resource)).hexdigest())
    return digest.hexdigest()


def _outputs(image: GuestImage) -> tuple[Path, ...]:
    return (image.kernel, image.initrd, image.disk)


def _stamp_matches(output_dir: Path, digest: str, image: GuestImage) -> bool:
    try:
        stamp = json.loads((output_dir / STAMP_NAME).read_text())
        if stamp.get("inputs") != digest:
            return False
        recorded = stamp["outputs"]
        return all(
            path.is_file() and recorded.get(path.name) == _sha256_file(path)
            for path in _outputs(image)
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _write_stamp(output_dir: Path, digest: str, image: GuestImage) -> None:
    stamp = {
        "inputs": digest,
        "cmdline": image.cmdline,
        "outputs": {path.name: _sha256_file(path) for path in _outputs(image)},
    }
    _atomic_write(output_dir / STAMP_NAME, (json.dumps(stamp, indent=2) + "\n").encode())


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
        tmp.chmod(mode)
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise GuestImageError(f"cannot write {path}: {exc}") from exc


def _remove(path: Path) -> None:
    with suppress(FileNotFoundError):
        path.unlink()


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
