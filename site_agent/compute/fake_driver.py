"""An in-memory ``HypervisorDriver`` for tests of the layers above the hypervisor.

It honours the same contract as ``LibvirtDriver`` (both run the contract
suite in ``tests/site_agent/compute/test_driver_contract.py``) and validates
specs with the same XML builder, so a spec the fake accepts is one libvirt
would be given. Nothing runs: domains are records in a dict.

THIS IS A FAKE. To let upper layers be tested without QEMU it imitates a
guest on the serial console: when a domain starts (and after each reboot) it
appends ``STRATUS-READY <vm_id> none`` to ``spec.console_log`` (``none``
stands for "no IP address"); a reboot first appends ``[fake] reset``. Real
guests print that line themselves (see ``site_agent/guest``). Set
``write_console=False`` to get no console output at all.

Failure simulation:

* ``fail_next_start = "reason"``: the next ``start`` raises
  ``DomainCreateFailed(reason)`` and defines nothing; then it resets to ``None``.
* ``fail_next(method, exc)``: the next call of ``method`` raises ``exc``.
* ``reachable = False``: ``connect`` raises ``HypervisorUnavailable``;
  ``disconnect()`` makes every call raise it (a host that went away).
* ``acpi_poweroff = False``: guests ignore the ACPI power button (``shutdown``
  leaves them running), as a guest without ACPI handling does.
* ``crash(vm_id)`` / ``guest_poweroff(vm_id)``: the guest crashes or powers
  itself off, as seen later by ``state``.

Networks are records in ``networks`` (name -> spec); as with libvirt, a
domain whose NIC names a network that does not exist fails to start.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from site_agent.compute.domain_xml import disk_xml, domain_xml
from site_agent.compute.driver import (
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
from site_agent.compute.network_xml import check_network_spec


@dataclass
class FakeDomain:
    """One fake domain: its spec, state, disks by target, and how often it was (re)booted."""

    spec: DomainSpec
    state: DomainState
    disks: dict[str, DiskSpec] = field(default_factory=dict)
    boots: int = 0


class FakeDriver(HypervisorDriver):
    """In-memory host with ``cpus`` CPUs and ``memory_mib`` MiB (see the module docstring)."""

    def __init__(
        self,
        uri: str = "fake://host",
        *,
        cpus: int = 8,
        memory_mib: int = 16384,
        hostname: str = "fake-host",
        write_console: bool = True,
        owner: str = "",
    ) -> None:
        self.uri = uri
        self.owner = owner
        self.cpus = cpus
        self.memory_mib = memory_mib
        self.hostname = hostname
        self.write_console = write_console
        self.domains: dict[str, FakeDomain] = {}
        self.networks: dict[str, NetworkSpec] = {}
        self.fail_next_start: str | None = None
        self.reachable = True
        self.acpi_poweroff = True
        self.connected = False
        self._fail_next: dict[str, ComputeError] = {}
        self.calls: list[str] = []  # method names, in call order

    # -- failure simulation ----------------------------------------------------------

    def fail_next(self, method: str, exc: ComputeError) -> None:
        """Make the next call of ``method`` (e.g. ``"state"``) raise ``exc``."""
        if not callable(getattr(HypervisorDriver, method, None)):
            raise ValueError(f"not a driver method: {method}")
        self._fail_next[method] = exc

    def disconnect(self) -> None:
        """Simulate a lost host: every call raises ``HypervisorUnavailable`` until ``connect``."""
        self.connected = False
        self.reachable = False

    def crash(self, vm_id: str) -> None:
        """The guest crashed: ``CRASHED`` until it is started again (as with libvirt)."""
        self.domains[vm_id].state = DomainState.CRASHED

    def guest_poweroff(self, vm_id: str) -> None:
        """The guest powered itself off (e.g. ``poweroff`` inside the guest)."""
        self.domains[vm_id].state = DomainState.SHUTOFF

    # -- helpers ---------------------------------------------------------------------

    async def _enter(self, method: str) -> None:
        """Common prologue: record the call, yield to the loop, apply injected failures."""
        self.calls.append(method)
        await asyncio.sleep(0)
        exc = self._fail_next.pop(method, None)
        if exc is not None:
            raise exc
        if method != "connect" and not self.connected:
            raise HypervisorUnavailable(f"{self.uri}: driver is not connected")

    def _require(self, vm_id: str) -> FakeDomain:
        try:
            return self.domains[vm_id]
        except KeyError:
            raise DomainNotFound(f"{self.uri}: no domain for VM {vm_id}") from None

    def _console(self, spec: DomainSpec, *lines: str) -> None:
        if not self.write_console or spec.console_log is None:
            return
        with spec.console_log.open("a", encoding="utf-8") as log:
            for line in lines:
                log.write(line + "\n")

    def _boot(self, dom: FakeDomain) -> None:
        dom.state = DomainState.RUNNING
        dom.boots += 1
        self._console(dom.spec, f"STRATUS-READY {dom.spec.vm_id} none")

    # -- HypervisorDriver ----------------------------------------------------------------

    async def connect(self) -> None:
        """Connect; ``HypervisorUnavailable`` while ``reachable`` is False."""
        await self._enter("connect")
        if not self.reachable:
            raise HypervisorUnavailable(f"{self.uri}: cannot connect (fake host unreachable)")
        self.connected = True

    async def close(self) -> None:
        """Disconnect. Idempotent. Domains survive (they live on the "host")."""
        self.calls.append("close")
        self.connected = False

    async def host_info(self) -> HostInfo:
        """The configured capacity, accelerator ``TEST``."""
        await self._enter("host_info")
        return HostInfo(
            uri=self.uri,
            hostname=self.hostname,
            cpus=self.cpus,
            memory_mib=self.memory_mib,
            accel=Accel.TEST,
            extra={"hypervisor": "fake"},
        )

    async def start(self, spec: DomainSpec) -> None:
        """Define and "boot" ``spec``; ``DomainCreateFailed`` (nothing defined) on any failure."""
        try:
            await self._enter("start")
        except HypervisorUnavailable as exc:
            raise DomainCreateFailed(str(exc)) from exc
        if self.fail_next_start is not None:
            reason, self.fail_next_start = self.fail_next_start, None
            raise DomainCreateFailed(f"{self.uri}: {reason} (injected)")
        try:
            domain_xml(spec, Accel.TEST)
        except ValueError as exc:
            raise DomainCreateFailed(f"invalid domain spec: {exc}") from exc
        if spec.vm_id in self.domains:
            raise DomainCreateFailed(f"{self.uri}: VM {spec.vm_id} already exists")
        for nic in spec.nics:
            if nic.network not in self.networks:
                raise DomainCreateFailed(f"{self.uri}: network {nic.network!r} not found")
        dom = FakeDomain(spec=spec, state=DomainState.SHUTOFF)
        dom.disks = {d.target: d for d in spec.disks}
        try:
            self._boot(dom)
        except OSError as exc:  # console log not writable: a real start fails too
            raise DomainCreateFailed(f"{self.uri}: console log: {exc}") from exc
        self.domains[spec.vm_id] = dom

    async def shutdown(self, vm_id: str) -> None:
        """Power button: SHUTOFF at once if ``acpi_poweroff``, else ignored by the "guest"."""
        await self._enter("shutdown")
        dom = self._require(vm_id)
        if dom.state is DomainState.RUNNING and self.acpi_poweroff:
            dom.state = DomainState.SHUTOFF

    async def destroy(self, vm_id: str) -> None:
        """Hard power-off; missing or stopped is fine (a crashed domain stays ``CRASHED``)."""
        await self._enter("destroy")
        dom = self.domains.get(vm_id)
        if dom is not None and dom.state is not DomainState.CRASHED:
            dom.state = DomainState.SHUTOFF

    async def undefine(self, vm_id: str) -> None:
        """Forget the domain (after destroying it); missing is fine."""
        await self._enter("undefine")
        self.domains.pop(vm_id, None)

    async def reboot(self, vm_id: str) -> None:
        """Reset: the console gets ``[fake] reset`` and a new ready line."""
        await self._enter("reboot")
        dom = self._require(vm_id)
        if dom.state not in (DomainState.RUNNING, DomainState.PAUSED):
            raise DomainStateError(f"{self.uri}: VM {vm_id} is not running")
        self._console(dom.spec, "[fake] reset")
        self._boot(dom)

    async def state(self, vm_id: str) -> DomainState:
        """Current state; ``MISSING`` if unknown."""
        await self._enter("state")
        dom = self.domains.get(vm_id)
        return DomainState.MISSING if dom is None else dom.state

    async def list_domains(self) -> dict[str, DomainState]:
        """Every fake domain (all are Stratus-managed)."""
        await self._enter("list_domains")
        return {vm_id: dom.state for vm_id, dom in self.domains.items()}

    async def attach_disk(self, vm_id: str, disk: DiskSpec) -> None:
        """Record ``disk`` at its target; ``DeviceError`` if invalid or the target is taken."""
        await self._enter("attach_disk")
        dom = self._require(vm_id)
        try:
            disk_xml(disk)
        except ValueError as exc:
            raise DeviceError(f"invalid disk: {exc}") from exc
        if disk.target in dom.disks:
            raise DeviceError(f"{self.uri}: VM {vm_id} already has a disk at {disk.target}")
        dom.disks[disk.target] = disk

    async def detach_disk(self, vm_id: str, target: str) -> None:
        """Forget the disk at ``target``; ``DiskNotAttached`` if none is there."""
        await self._enter("detach_disk")
        dom = self._require(vm_id)
        if dom.disks.pop(target, None) is None:
            raise DiskNotAttached(f"{self.uri}: VM {vm_id} has no disk at {target}")

    async def ensure_network(self, spec: NetworkSpec) -> None:
        """Record the network (kept as it is if the name exists); ``NetworkError`` if invalid."""
        await self._enter("ensure_network")
        try:
            check_network_spec(spec)
        except ValueError as exc:
            raise NetworkError(f"invalid network spec: {exc}") from exc
        self.networks.setdefault(spec.name, spec)

    async def remove_network(self, name: str) -> None:
        """Forget the network; missing is fine."""
        await self._enter("remove_network")
        self.networks.pop(name, None)
