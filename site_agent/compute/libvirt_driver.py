"""``HypervisorDriver`` over libvirt: the only module of the project that imports ``libvirt``.

One libvirt connection per driver (libvirt connections are thread-safe);
every blocking libvirt call runs in a worker thread (``asyncio.to_thread``),
never in the event loop. libvirt errors are translated at this edge into
``site_agent.compute.errors`` with ``raise ... from exc``:

* ``VIR_ERR_NO_DOMAIN`` -> ``DomainNotFound`` (or success, for ``destroy``,
  ``undefine`` and ``state``);
* a dead connection, RPC or authentication failure -> ``HypervisorUnavailable``
  (the next call reopens the connection);
* anything else -> the operation's own error (``DomainCreateFailed`` for
  ``start``, ``DeviceError`` for attach/detach, ``DomainStateError`` when the
  domain's state forbids the operation, ``ComputeError`` otherwise).

Operations:

* ``start`` = ``defineXML`` + ``create``; if ``create`` fails the definition
  is removed again, so nothing stays behind. Starting a VM id that already
  exists fails and leaves the existing domain untouched.
* ``shutdown`` presses the ACPI power button
  (``VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN``); whether the guest powers off is up
  to the guest, so callers poll ``state`` and fall back to ``destroy``.
* ``reboot`` is ``virDomainReset``: a hard reset, like the reset button,
  which works without any guest cooperation. The qemu process (and so the
  serial console log) stays the same; the log simply continues.
* ``attach_disk``/``detach_disk`` affect the live domain (when running) and
  its persistent definition. A live detach needs the guest to release the
  device (ACPI PCI hot-unplug); ``detach_disk`` waits up to
  ``detach_timeout`` seconds for it and raises ``DeviceError`` if the guest
  did not let go (the disk is then already gone from the persistent
  definition, so it disappears at the next power cycle).
* ``ensure_network`` = ``networkDefineXML`` + ``create`` + autostart (XML from
  ``site_agent.compute.network_xml``: isolated, no DHCP, no DNS); an existing
  network of the same name is only started if inactive. ``remove_network`` =
  ``destroy`` + ``undefine``; a missing network is fine.

Accelerator (``accel`` argument, or worked out on ``connect``): ``test:``
URIs are ``Accel.TEST``; local ``qemu:`` URIs ask
``site_agent.compute.accel.detect_local_accel()`` (imported lazily; ``TCG``
when that module is absent or the probe fails); remote ``qemu+...://host/``
URIs are ``TCG`` unless configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import libvirt

from site_agent.compute.domain_xml import METADATA_NS, disk_xml, domain_xml, metadata_owner
from site_agent.compute.driver import (
    DOMAIN_PREFIX,
    Accel,
    DiskSpec,
    DomainSpec,
    DomainState,
    HostInfo,
    HypervisorDriver,
    NetworkSpec,
)
from site_agent.compute.errors import (
    ComputeError,
    DeviceError,
    DiskNotAttached,
    DomainCreateFailed,
    DomainNotFound,
    DomainStateError,
    HypervisorUnavailable,
    NetworkError,
)
from site_agent.compute.network_xml import network_xml

log = logging.getLogger(__name__)

T = TypeVar("T")

#: libvirt ``virDomainState`` -> Stratus ``DomainState`` (libcloud's ``NODE_STATE_MAP`` idea).
#: One refinement on top (``_map_state``): SHUTOFF with reason CRASHED is ``CRASHED``, because
#: ``<on_crash>destroy</on_crash>`` turns a guest crash into a shut-off domain.
STATE_MAP: dict[int, DomainState] = {
    # qemu reports NOSTATE only while a domain's process is being set up: it exists and is live.
    libvirt.VIR_DOMAIN_NOSTATE: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    # BLOCKED: running, but waiting on a resource.
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.SHUTTING_DOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
    # PMSUSPENDED: the guest suspended itself to RAM; not executing, resumable.
    libvirt.VIR_DOMAIN_PMSUSPENDED: DomainState.PAUSED,
}

#: libvirt error codes that mean "the host cannot be reached / talked to".
_UNAVAILABLE_CODES = frozenset(
    {
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_INVALID_CONN,
        libvirt.VIR_ERR_RPC,
        libvirt.VIR_ERR_AUTH_FAILED,
        libvirt.VIR_ERR_AUTH_CANCELLED,
        libvirt.VIR_ERR_AUTH_UNAVAILABLE,
    }
)
_UNSUPPORTED_CODES = frozenset(
    {libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED}
)
_LOCAL_HOSTS = frozenset({"", "localhost", "127.0.0.1", "[::1]", "::1"})

_UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
)


def _silence_libvirt_stderr() -> None:
    """Stop libvirt printing every error on stderr; errors arrive as exceptions anyway."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


_silence_libvirt_stderr()


_local_accel: Accel | None = None  # this machine's verdict, probed once per process
_local_accel_lock = threading.Lock()


def _detect_local_accel() -> Accel:
    """``detect_local_accel()`` once per process (it may boot a probe VM); TCG if unavailable."""
    global _local_accel
    with _local_accel_lock:
        if _local_accel is not None:
            return _local_accel
        try:
            from site_agent.compute.accel import detect_local_accel
        except ImportError:
            log.info("no accelerator probe available; using TCG")
            return Accel.TCG
        try:
            _local_accel = detect_local_accel()
        except Exception:  # a broken probe must not take the host down: TCG always works
            log.warning("accelerator probe failed; using TCG", exc_info=True)
            return Accel.TCG
        return _local_accel


def accel_for_uri(uri: str) -> Accel:
    """The accelerator a driver on ``uri`` uses when none is configured (see module docstring)."""
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme == "test":
        return Accel.TEST
    if scheme == "qemu" and parts.hostname in (None, *_LOCAL_HOSTS):
        return _detect_local_accel()
    return Accel.TCG


def _code(exc: libvirt.libvirtError) -> int:
    code = exc.get_error_code()
    return int(code) if code is not None else -1


def _message(exc: libvirt.libvirtError) -> str:
    return str(exc.get_error_message() or exc)


def _find_disk(xml: str, target: str) -> ET.Element | None:
    """The ``<disk>`` element at guest device ``target`` in a domain XML, if any."""
    root = ET.fromstring(xml)
    for disk in root.iterfind("./devices/disk"):
        tgt = disk.find("target")
        if tgt is not None and tgt.get("dev") == target:
            return disk
    return None


class LibvirtDriver(HypervisorDriver):
    """A hypervisor host reached through a libvirt URI (``qemu:///system``, ``test:///default``...).

    ``accel`` forces the accelerator (and so the domain type); ``None`` works
    it out from the URI on ``connect``. ``emulator`` sets the QEMU binary in
    the domain XML (libvirt's default otherwise). ``detach_timeout`` bounds
    how long ``detach_disk`` waits for a running guest to release a disk.
    """

    def __init__(
        self,
        uri: str,
        accel: Accel | None = None,
        *,
        emulator: str | None = None,
        detach_timeout: float = 10.0,
        owner: str = "",
    ) -> None:
        self.uri = uri
        self.owner = owner
        self._accel = accel
        self._emulator = emulator
        self.detach_timeout = detach_timeout
        self._conn: Any = None
        self._open = False  # connect() called and close() not yet
        self._lock = threading.Lock()  # guards opening / closing the connection
        self._starting: set[str] = set()  # vm ids with a start in flight
        self._starting_lock = threading.Lock()

    # -- connection --------------------------------------------------------------

    @property
    def accel(self) -> Accel | None:
        """The accelerator in use (``None`` until ``connect`` has worked it out)."""
        return self._accel

    def _open_sync(self) -> Any:
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise HypervisorUnavailable(f"{self.uri}: cannot connect: {_message(exc)}") from exc
        if conn is None:  # very old bindings returned None instead of raising
            raise HypervisorUnavailable(f"{self.uri}: cannot connect")
        return conn

    def _connection(self) -> Any:
        """The open connection, reopened if it died; ``HypervisorUnavailable`` if not connected."""
        with self._lock:
            if not self._open:
                raise HypervisorUnavailable(f"{self.uri}: driver is not connected")
            conn = self._conn
            if conn is not None:
                try:
                    alive = conn.isAlive() == 1
                except libvirt.libvirtError:
                    alive = False
                if alive:
                    return conn
                log.warning("connection to %s lost; reconnecting", self.uri)
                self._conn = None
                with contextlib.suppress(libvirt.libvirtError):
                    conn.close()
            self._conn = self._open_sync()
            return self._conn

    def _connect_sync(self) -> None:
        with self._lock:
            if self._conn is None:
                self._conn = self._open_sync()
            self._open = True
        if self._accel is None:
            self._accel = accel_for_uri(self.uri)

    async def connect(self) -> None:
        """Open the connection (idempotent).

        ``HypervisorUnavailable`` if the host cannot be reached. Also settles
        the accelerator when none was configured (this may probe KVM).
        """
        await asyncio.to_thread(self._connect_sync)

    def _close_sync(self) -> None:
        with self._lock:
            conn, self._conn, self._open = self._conn, None, False
        if conn is not None:
            try:
                conn.close()
            except libvirt.libvirtError:
                log.debug("error closing %s", self.uri, exc_info=True)

    async def close(self) -> None:
        """Close the connection. Idempotent; later calls raise ``HypervisorUnavailable``."""
        await asyncio.to_thread(self._close_sync)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    # -- error translation -------------------------------------------------------

    def _error(
        self, exc: libvirt.libvirtError, kind: type[ComputeError], what: str, conn: Any = None
    ) -> ComputeError:
        """The compute error for a libvirt error raised while doing ``what``."""
        code = _code(exc)
        message = f"{self.uri}: {what}: {_message(exc)}"
        dead = code in _UNAVAILABLE_CODES
        if not dead and conn is not None:
            try:
                dead = conn.isAlive() != 1
            except libvirt.libvirtError:
                dead = True
        if dead and kind is not DomainCreateFailed:
            return HypervisorUnavailable(message)
        if code == libvirt.VIR_ERR_NO_DOMAIN and kind is not DomainCreateFailed:
            return DomainNotFound(message)
        if code == libvirt.VIR_ERR_OPERATION_INVALID and kind is ComputeError:
            return DomainStateError(message)
        return kind(message)

    def _lookup(self, conn: Any, vm_id: str) -> Any:
        """The libvirt domain of ``vm_id``, or ``None`` if there is none."""
        try:
            return conn.lookupByName(DOMAIN_PREFIX + vm_id)
        except libvirt.libvirtError as exc:
            if _code(exc) == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise self._error(exc, ComputeError, f"look up {vm_id}", conn) from exc

    def _require(self, conn: Any, vm_id: str) -> Any:
        dom = self._lookup(conn, vm_id)
        if dom is None:
            raise DomainNotFound(f"{self.uri}: no domain for VM {vm_id}")
        return dom

    # -- host ----------------------------------------------------------------------

    def _host_info_sync(self) -> HostInfo:
        conn = self._connection()
        try:
            model, memory_mib, cpus, mhz, *_ = conn.getInfo()
            hostname = conn.getHostname()
            extra = {
                "mhz": str(mhz),
                "hypervisor": str(conn.getType()),
                "hypervisor_version": str(conn.getVersion()),
                "libvirt_version": str(conn.getLibVersion()),
            }
        except libvirt.libvirtError as exc:
            raise self._error(exc, ComputeError, "host info", conn) from exc
        accel = self._accel or accel_for_uri(self.uri)
        return HostInfo(
            uri=self.uri,
            hostname=str(hostname),
            cpus=int(cpus),
            memory_mib=int(memory_mib),
            accel=accel,
            arch=str(model),
            extra=extra,
        )

    async def host_info(self) -> HostInfo:
        """CPUs, memory (MiB), hostname, architecture and accelerator from ``virNodeGetInfo``."""
        return await self._run(self._host_info_sync)

    # -- lifecycle -----------------------------------------------------------------

    def _remove_quietly(self, dom: Any) -> None:
        """Best-effort destroy + undefine after a failed start."""
        try:
            if dom.isActive():
                dom.destroy()
        except libvirt.libvirtError:
            log.debug("cleanup destroy failed", exc_info=True)
        try:
            dom.undefineFlags(_UNDEFINE_FLAGS)
        except libvirt.libvirtError as exc:
            if _code(exc) != libvirt.VIR_ERR_NO_DOMAIN:
                log.error("could not undefine %s after a failed start: %s", dom.name(), exc)

    def _start_sync(self, spec: DomainSpec) -> None:
        accel = self._accel or accel_for_uri(self.uri)
        try:
            xml = domain_xml(spec, accel, emulator=self._emulator, owner=self.owner)
        except ValueError as exc:
            raise DomainCreateFailed(f"invalid domain spec: {exc}") from exc
        with self._starting_lock:
            if spec.vm_id in self._starting:
                raise DomainCreateFailed(f"VM {spec.vm_id} is already being started")
            self._starting.add(spec.vm_id)
        try:
            try:
                conn = self._connection()
                existing = self._lookup(conn, spec.vm_id)
            except ComputeError as exc:
                raise DomainCreateFailed(str(exc)) from exc
            if existing is not None:
                raise DomainCreateFailed(f"{self.uri}: VM {spec.vm_id} already exists")
            try:
                dom = conn.defineXML(xml)
            except libvirt.libvirtError as exc:
                raise self._error(exc, DomainCreateFailed, f"define {spec.vm_id}", conn) from exc
            try:
                dom.create()
            except libvirt.libvirtError as exc:
                self._remove_quietly(dom)
                raise self._error(exc, DomainCreateFailed, f"start {spec.vm_id}", conn) from exc
        finally:
            with self._starting_lock:
                self._starting.discard(spec.vm_id)

    async def start(self, spec: DomainSpec) -> None:
        """Define and boot ``spec``; on any failure raise ``DomainCreateFailed`` with nothing left.

        An invalid spec, an existing domain with the same VM id, a define or a
        create error all raise ``DomainCreateFailed`` (the cause is chained);
        an existing domain is never touched.
        """
        await self._run(self._start_sync, spec)

    def _shutdown_sync(self, vm_id: str) -> None:
        conn = self._connection()
        dom = self._require(conn, vm_id)
        try:
            if not dom.isActive():
                return
            try:
                dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
            except libvirt.libvirtError as exc:
                if _code(exc) not in _UNSUPPORTED_CODES:
                    raise
                # Drivers without the ACPI flag (libvirt's test driver): their default method.
                dom.shutdown()
        except libvirt.libvirtError as exc:
            if _code(exc) == libvirt.VIR_ERR_OPERATION_INVALID and not self._is_active(dom):
                return  # it stopped meanwhile
            raise self._error(exc, ComputeError, f"shutdown {vm_id}", conn) from exc

    async def shutdown(self, vm_id: str) -> None:
        """Press the ACPI power button and return at once (poll ``state``).

        A stopped domain is left as it is; a missing one raises ``DomainNotFound``.
        """
        await self._run(self._shutdown_sync, vm_id)

    @staticmethod
    def _is_active(dom: Any) -> bool:
        try:
            return bool(dom.isActive())
        except libvirt.libvirtError:
            return False

    def _destroy_sync(self, vm_id: str) -> None:
        conn = self._connection()
        dom = self._lookup(conn, vm_id)
        if dom is None:
            return
        try:
            if dom.isActive():
                dom.destroy()
        except libvirt.libvirtError as exc:
            code = _code(exc)
            if code == libvirt.VIR_ERR_NO_DOMAIN:
                return
            if code == libvirt.VIR_ERR_OPERATION_INVALID and not self._is_active(dom):
                return
            raise self._error(exc, ComputeError, f"destroy {vm_id}", conn) from exc

    async def destroy(self, vm_id: str) -> None:
        """Hard power-off; a missing or stopped domain is not an error. The definition stays."""
        await self._run(self._destroy_sync, vm_id)

    def _undefine_sync(self, vm_id: str) -> None:
        self._destroy_sync(vm_id)
        conn = self._connection()
        dom = self._lookup(conn, vm_id)
        if dom is None:  # a transient domain vanishes when destroyed
            return
        try:
            dom.undefineFlags(_UNDEFINE_FLAGS)
        except libvirt.libvirtError as exc:
            if _code(exc) == libvirt.VIR_ERR_NO_DOMAIN:
                return
            raise self._error(exc, ComputeError, f"undefine {vm_id}", conn) from exc

    async def undefine(self, vm_id: str) -> None:
        """Destroy if running, then remove the definition; a missing domain is not an error.

        Disk files are never deleted: they belong to the storage layer.
        """
        await self._run(self._undefine_sync, vm_id)

    def _reboot_sync(self, vm_id: str) -> None:
        conn = self._connection()
        dom = self._require(conn, vm_id)
        try:
            if not dom.isActive():
                raise DomainStateError(f"{self.uri}: VM {vm_id} is not running")
            dom.reset(0)
        except libvirt.libvirtError as exc:
            raise self._error(exc, ComputeError, f"reboot {vm_id}", conn) from exc

    async def reboot(self, vm_id: str) -> None:
        """Hard reset (``virDomainReset``), no guest cooperation needed; the console log continues.

        ``DomainNotFound`` if missing, ``DomainStateError`` if not running.
        """
        await self._run(self._reboot_sync, vm_id)

    def _state_sync(self, vm_id: str) -> DomainState:
        conn = self._connection()
        dom = self._lookup(conn, vm_id)
        if dom is None:
            return DomainState.MISSING
        try:
            code, reason = dom.state()
        except libvirt.libvirtError as exc:
            if _code(exc) == libvirt.VIR_ERR_NO_DOMAIN:
                return DomainState.MISSING
            raise self._error(exc, ComputeError, f"state of {vm_id}", conn) from exc
        return self._map_state(code, reason)

    @staticmethod
    def _map_state(code: int, reason: int = 0) -> DomainState:
        """``STATE_MAP``, except that a domain shut off by a crash is ``CRASHED``."""
        if code == libvirt.VIR_DOMAIN_SHUTOFF and reason == libvirt.VIR_DOMAIN_SHUTOFF_CRASHED:
            return DomainState.CRASHED
        try:
            return STATE_MAP[code]
        except KeyError:
            raise ComputeError(f"unknown libvirt domain state {code}") from None

    async def state(self, vm_id: str) -> DomainState:
        """The domain's state through ``STATE_MAP``; ``MISSING`` when there is no such domain."""
        return await self._run(self._state_sync, vm_id)

    def _list_sync(self) -> dict[str, DomainState]:
        conn = self._connection()
        try:
            domains = conn.listAllDomains(0)
        except libvirt.libvirtError as exc:
            raise self._error(exc, ComputeError, "list domains", conn) from exc
        result: dict[str, DomainState] = {}
        for dom in domains:
            try:
                name = dom.name()
                if not name.startswith(DOMAIN_PREFIX) or not self._owns(dom):
                    continue
                code, reason = dom.state()
            except libvirt.libvirtError as exc:
                if _code(exc) == libvirt.VIR_ERR_NO_DOMAIN:
                    continue  # vanished while listing
                raise self._error(exc, ComputeError, "list domains", conn) from exc
            result[name[len(DOMAIN_PREFIX) :]] = self._map_state(code, reason)
        return result

    def _owns(self, dom: Any) -> bool:
        """True if ``dom`` was started by a driver with this driver's owner (or no owner is set)."""
        if not self.owner:
            return True
        try:
            element = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)
        except libvirt.libvirtError:
            return False  # no Stratus metadata: not ours
        return metadata_owner(element) == self.owner

    async def list_domains(self) -> dict[str, DomainState]:
        """Domains named ``stratus-<vm_id>`` owned by ``self.owner`` (running or not)."""
        return await self._run(self._list_sync)

    # -- disks ---------------------------------------------------------------------

    def _attach_sync(self, vm_id: str, disk: DiskSpec) -> None:
        try:
            xml = disk_xml(disk)
        except ValueError as exc:
            raise DeviceError(f"invalid disk: {exc}") from exc
        conn = self._connection()
        dom = self._require(conn, vm_id)
        try:
            active = bool(dom.isActive())
            persistent = bool(dom.isPersistent())
            current = dom.XMLDesc(0)
            if _find_disk(current, disk.target) is not None:
                raise DeviceError(f"{self.uri}: VM {vm_id} already has a disk at {disk.target}")
            flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG if persistent else 0
            if active:
                flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
            dom.attachDeviceFlags(xml, flags)
        except libvirt.libvirtError as exc:
            raise self._error(exc, DeviceError, f"attach {disk.target} to {vm_id}", conn) from exc

    async def attach_disk(self, vm_id: str, disk: DiskSpec) -> None:
        """Hot-plug ``disk`` into the running domain and its persistent definition.

        A stopped domain gets it in its definition only. ``DomainNotFound`` if
        the domain is missing; ``DeviceError`` if the target is taken, the
        disk spec is invalid or the hypervisor refuses (e.g. a missing file,
        or a driver without hot-plug such as libvirt 9.0's test driver).
        """
        await self._run(self._attach_sync, vm_id, disk)

    def _detach_sync(self, vm_id: str, target: str) -> bool:
        """Request the detach; True if a live unplug is pending (to be waited for)."""
        conn = self._connection()
        dom = self._require(conn, vm_id)
        try:
            active = bool(dom.isActive())
            persistent = bool(dom.isPersistent())
            live = _find_disk(dom.XMLDesc(0), target) if active else None
            config = (
                _find_disk(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), target)
                if persistent
                else None
            )
            if live is None and config is None:
                raise DiskNotAttached(f"{self.uri}: VM {vm_id} has no disk at {target}")
            flags = 0
            if live is not None:
                flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
            if config is not None:
                flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
            element = config if config is not None else live
            assert element is not None
            dom.detachDeviceFlags(ET.tostring(element, encoding="unicode"), flags)
        except libvirt.libvirtError as exc:
            raise self._error(exc, DeviceError, f"detach {target} from {vm_id}", conn) from exc
        return live is not None

    def _still_attached_sync(self, vm_id: str, target: str) -> bool:
        conn = self._connection()
        dom = self._lookup(conn, vm_id)
        if dom is None:
            return False
        try:
            if not dom.isActive():
                return False
            return _find_disk(dom.XMLDesc(0), target) is not None
        except libvirt.libvirtError as exc:
            if _code(exc) == libvirt.VIR_ERR_NO_DOMAIN:
                return False
            raise self._error(exc, DeviceError, f"detach {target} from {vm_id}", conn) from exc

    async def detach_disk(self, vm_id: str, target: str) -> None:
        """Hot-unplug the disk at ``target`` and drop it from the persistent definition.

        Returns once the running guest has released the device (polled for up
        to ``detach_timeout`` seconds; ``DeviceError`` if it has not).
        ``DeviceError`` if no disk is at ``target``; ``DomainNotFound`` if the
        domain is missing.
        """
        pending = await self._run(self._detach_sync, vm_id, target)
        if not pending:
            return
        deadline = time.monotonic() + self.detach_timeout
        while await self._run(self._still_attached_sync, vm_id, target):
            if time.monotonic() >= deadline:
                raise DeviceError(
                    f"{self.uri}: VM {vm_id} did not release {target} within "
                    f"{self.detach_timeout:g}s (removed from its definition; it goes at the "
                    "next power cycle)"
                )
            await asyncio.sleep(0.05)

    # -- networks --------------------------------------------------------------------

    def _lookup_network(self, conn: Any, name: str) -> Any:
        """The libvirt network ``name``, or ``None`` if there is none."""
        try:
            return conn.networkLookupByName(name)
        except libvirt.libvirtError as exc:
            if _code(exc) == libvirt.VIR_ERR_NO_NETWORK:
                return None
            raise self._error(exc, NetworkError, f"look up network {name}", conn) from exc

    def _ensure_network_sync(self, spec: NetworkSpec) -> None:
        try:
            xml = network_xml(spec)
        except ValueError as exc:
            raise NetworkError(f"invalid network spec: {exc}") from exc
        conn = self._connection()
        net = self._lookup_network(conn, spec.name)
        defined = False
        try:
            if net is None:
                try:
                    net = conn.networkDefineXML(xml)
                    defined = True
                except libvirt.libvirtError as exc:
                    if _code(exc) != libvirt.VIR_ERR_NETWORK_EXIST:
                        raise
                    net = conn.networkLookupByName(spec.name)  # defined meanwhile
            if not net.isActive():
                try:
                    net.create()
                except libvirt.libvirtError as exc:
                    if _code(exc) != libvirt.VIR_ERR_OPERATION_INVALID or not net.isActive():
                        raise  # (otherwise it was started meanwhile)
            if net.isPersistent() and not net.autostart():
                net.setAutostart(1)
        except libvirt.libvirtError as exc:
            if defined:
                with contextlib.suppress(libvirt.libvirtError):
                    if net.isActive():
                        net.destroy()
                with contextlib.suppress(libvirt.libvirtError):
                    net.undefine()
            raise self._error(exc, NetworkError, f"ensure network {spec.name}", conn) from exc

    async def ensure_network(self, spec: NetworkSpec) -> None:
        """Define, start and autostart the isolated network ``spec`` unless it exists already.

        An existing network of that name is kept (and started if inactive).
        ``NetworkError`` if libvirt refuses (e.g. the bridge name is taken by
        another network); a definition made by this call is removed again.
        """
        await self._run(self._ensure_network_sync, spec)

    def _remove_network_sync(self, name: str) -> None:
        conn = self._connection()
        net = self._lookup_network(conn, name)
        if net is None:
            return
        try:
            if net.isActive():
                net.destroy()
            if net.isPersistent():
                net.undefine()
        except libvirt.libvirtError as exc:
            if _code(exc) == libvirt.VIR_ERR_NO_NETWORK:
                return
            raise self._error(exc, NetworkError, f"remove network {name}", conn) from exc

    async def remove_network(self, name: str) -> None:
        """Stop and undefine the network ``name``; a missing network is not an error.

        Guests still plugged into it lose their link (libvirt allows that);
        callers remove networks only when no VM of theirs uses them.
        """
        await self._run(self._remove_network_sync, name)
