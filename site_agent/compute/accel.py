"""Decide whether guests on this host run under KVM or QEMU's TCG emulation.

``/dev/kvm`` existing is not enough: under nested virtualisation KVM can
accept a guest and then hang it forever during boot (seen on this project's
build machine: SeaBIOS runs, the Linux kernel never prints a line). So
:func:`detect_local_accel` proves that KVM *boots a Linux kernel*:

1. ``STRATUS_ACCEL=kvm|tcg`` in the environment decides without probing;
2. a cached verdict (``cache_path``) is reused while the host is unchanged
   (same QEMU binary, probe kernel, host kernel release);
3. if ``/dev/kvm`` cannot be opened or does not answer ``KVM_GET_API_VERSION``
   with 12, the answer is TCG;
4. otherwise a kernel (by default the newest ``/boot/vmlinuz-*``) is started
   twice at once, with ``-accel kvm`` and with ``-accel tcg``, serial console
   on a pipe and ``earlyprintk``: KVM is chosen only if its "Linux version"
   banner appears. A working KVM prints it well before TCG does, so once the
   TCG run has printed, KVM gets ``max(2 s, 3 x TCG time)`` (capped by
   ``timeout``) instead of the whole ``timeout``; this keeps the probe at
   about 2-3 s on a host where KVM hangs.

Every failure to prove KVM yields TCG, which always works. Nothing is sent
anywhere: the probe VMs have no network device.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import platform
import selectors
import shutil
import subprocess
import time
from pathlib import Path
from typing import IO

from site_agent.compute.driver import Accel

log = logging.getLogger(__name__)

ENV_OVERRIDE = "STRATUS_ACCEL"
KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12
PROBE_MARKER = b"Linux version"
PROBE_MIN_GRACE = 2.0  # seconds KVM always gets, even when TCG is quick
PROBE_TCG_FACTOR = 3.0  # KVM may take this many times TCG's banner time
DEFAULT_KVM_DEVICE = Path("/dev/kvm")
DEFAULT_BOOT_DIR = Path("/boot")


def accel_from_env() -> Accel | None:
    """Return the accelerator forced by ``STRATUS_ACCEL`` (``kvm`` or ``tcg``), or None.

    An empty or unset variable means "detect"; any other value raises ``ValueError``.
    """
    value = os.environ.get(ENV_OVERRIDE, "").strip().lower()
    if not value:
        return None
    if value == "kvm":
        return Accel.KVM
    if value == "tcg":
        return Accel.TCG
    raise ValueError(f"{ENV_OVERRIDE} must be 'kvm' or 'tcg', got {value!r}")


def kvm_device_usable(device: Path = DEFAULT_KVM_DEVICE) -> bool:
    """True if ``device`` opens read-write and reports the stable KVM API version (12)."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return int(fcntl.ioctl(fd, KVM_GET_API_VERSION)) == KVM_API_VERSION
    except OSError:
        return False
    finally:
        os.close(fd)


def default_probe_kernel(boot_dir: Path = DEFAULT_BOOT_DIR) -> Path | None:
    """The newest readable ``vmlinuz-*`` in ``boot_dir`` (cloud flavour first), or None."""
    kernels = [k for k in boot_dir.glob("vmlinuz-*") if k.is_file() and os.access(k, os.R_OK)]
    if not kernels:
        return None
    kernels.sort(key=lambda k: ("-cloud-" in k.name, k.stat().st_mtime, k.name))
    return kernels[-1]


def detect_local_accel(
    timeout: float = 8.0,
    *,
    cache_path: Path | None = None,
    qemu_binary: str = "qemu-system-x86_64",
    kernel: Path | None = None,
    kvm_device: Path = DEFAULT_KVM_DEVICE,
) -> Accel:
    """Return ``Accel.KVM`` only if KVM demonstrably boots a Linux guest here, else ``Accel.TCG``.

    See the module docstring for the order of checks. ``timeout`` bounds the
    boot probe (seconds). With ``cache_path`` the verdict of a real probe is
    stored there (JSON) and reused while QEMU, the probe kernel and the host
    kernel are unchanged; the environment override is never cached. Raises
    ``ValueError`` only for an invalid ``STRATUS_ACCEL``.
    """
    forced = accel_from_env()
    if forced is not None:
        log.info("accelerator forced by %s=%s", ENV_OVERRIDE, forced.value)
        return forced
    if not kvm_device_usable(kvm_device):
        log.info("%s missing or unusable: using TCG", kvm_device)
        return Accel.TCG
    qemu = shutil.which(qemu_binary)
    if qemu is None:
        log.warning("%s not found: cannot prove KVM works, using TCG", qemu_binary)
        return Accel.TCG
    probe_kernel = kernel if kernel is not None else default_probe_kernel()
    if probe_kernel is None or not os.access(probe_kernel, os.R_OK):
        log.warning("no readable kernel to probe KVM with: using TCG")
        return Accel.TCG

    key = _cache_key(qemu, probe_kernel, kvm_device)
    if cache_path is not None:
        cached = _read_cache(cache_path, key)
        if cached is not None:
            return cached
    started = time.monotonic()
    verdict = Accel.KVM if kvm_boots(qemu, probe_kernel, timeout) else Accel.TCG
    log.info("KVM boot probe: %s in %.1f s", verdict.value, time.monotonic() - started)
    if cache_path is not None:
        _write_cache(cache_path, key, verdict)
    return verdict


def _probe_command(qemu: str, accel: str, kernel: Path) -> list[str]:
    return [
        qemu,
        "-accel", accel,
        "-machine", "pc",
        "-m", "128",
        "-smp", "1",
        "-nodefaults",
        "-display", "none",
        "-monitor", "none",
        "-serial", "stdio",
        "-nic", "none",
        "-no-reboot",
        "-kernel", str(kernel),
        "-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1",
    ]  # fmt: skip


def kvm_boots(qemu: str, kernel: Path, timeout: float) -> bool:
    """Boot ``kernel`` under KVM (and TCG as a yardstick); True if KVM prints its banner in time."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    selector = selectors.DefaultSelector()
    buffers = {"kvm": b"", "tcg": b""}
    started = time.monotonic()
    deadline = started + timeout
    try:
        for accel in ("kvm", "tcg"):
            proc = subprocess.Popen(
                _probe_command(qemu, accel, kernel),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            procs[accel] = proc
            assert proc.stdout is not None
            os.set_blocking(proc.stdout.fileno(), False)
            selector.register(proc.stdout, selectors.EVENT_READ, accel)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for selkey, _ in selector.select(min(remaining, 0.1)):
                accel = str(selkey.data)
                stream: IO[bytes] = selkey.fileobj  # type: ignore[assignment]
                chunk = stream.read(65536)
                if not chunk:  # QEMU exited
                    selector.unregister(stream)
                    if accel == "kvm":
                        return False
                    continue
                buffers[accel] = (buffers[accel] + chunk)[-4096:]
                if PROBE_MARKER not in buffers[accel]:
                    continue
                if accel == "kvm":
                    return True
                # TCG has booted: a working KVM would have too, give it a bounded grace.
                tcg_time = time.monotonic() - started
                grace = max(PROBE_MIN_GRACE, PROBE_TCG_FACTOR * tcg_time)
                deadline = min(deadline, started + grace)
                selector.unregister(stream)
                _stop(procs.pop("tcg"))
        return False
    except OSError as exc:
        log.warning("cannot run the KVM probe: %s", exc)
        return False
    finally:
        selector.close()
        for proc in procs.values():
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    if proc.stdout is not None:
        proc.stdout.close()


def _cache_key(qemu: str, kernel: Path, kvm_device: Path) -> dict[str, str]:
    qemu_path = os.path.realpath(qemu)
    try:
        qemu_stamp = str(os.stat(qemu_path).st_mtime_ns)
        kernel_stamp = str(kernel.stat().st_mtime_ns)
    except OSError:
        qemu_stamp = kernel_stamp = ""
    return {
        "qemu": qemu_path,
        "qemu_mtime_ns": qemu_stamp,
        "kernel": str(kernel),
        "kernel_mtime_ns": kernel_stamp,
        "host_release": platform.release(),
        "kvm_device": str(kvm_device),
    }


def _read_cache(path: Path, key: dict[str, str]) -> Accel | None:
    try:
        data = json.loads(path.read_text())
        if data.get("key") != key:
            return None
        verdict = Accel(data["accel"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if verdict not in (Accel.KVM, Accel.TCG):
        return None
    log.info("accelerator from cache %s: %s", path, verdict.value)
    return verdict


def _write_cache(path: Path, key: dict[str, str], verdict: Accel) -> None:
    payload = {"accel": verdict.value, "key": key, "checked_at": time.time()}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write accelerator cache %s: %s", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()
