"""The hypervisor driver interface: the only way the site agent touches a hypervisor.

Semantics every implementation honours (checked by the contract tests in
``tests/site_agent/compute/test_driver_contract.py``):

* Domains are identified by the Stratus VM id (a UUID string); hypervisor ids
  never leave the driver. Domain names are ``stratus-<uuid>``; user-chosen VM
  names never reach the hypervisor (no XML or name injection).
* ``start`` either leaves a running domain or raises ``DomainCreateFailed``
  and leaves nothing defined behind.
* ``destroy`` and ``undefine`` of a missing domain succeed (idempotent).
* ``state`` of a missing domain is ``DomainState.MISSING``.
* ``list_domains`` reports only domains this driver's ``owner`` made: every
  domain carries its owner (the site's instance id) in its metadata, so
  several sites or test runs can share one libvirtd without ever touching
  each other's guests. With an empty ``owner`` every Stratus domain is listed.
* All methods are ``async``: blocking libraries run in a thread inside the
  implementation, never in the caller's event loop.
* Networks: ``ensure_network`` makes an isolated network (no forwarding, no
  DHCP: guests get their address from the cidata seed) exist and run, and is
  idempotent; ``remove_network`` of a missing network succeeds. A domain
  whose NIC names a network that does not exist fails to start.

Exception tree (module ``site_agent.compute.errors``; a branch of the site
agent's tree under ``SiteAgentError``, drawn with the HTTP answers in
``site_agent.errors``)::

    ComputeError
    ├── DomainCreateFailed
    ├── DomainNotFound
    ├── HypervisorUnavailable
    ├── DeviceError          (attach/detach)
    │   └── DiskNotAttached  (detach of a target the domain does not have)
    ├── NetworkError         (ensure/remove a network)
    ├── DomainStateError     (operation not valid in the domain's state, e.g. reboot when off)
    └── NoHostAvailable      (placement: no host fits; ``reasons`` per host URI)
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

DOMAIN_PREFIX = "stratus-"


class DomainState(StrEnum):
    """Closed set of hypervisor-level domain states (see ``STATE_MAP`` in each driver)."""

    RUNNING = "running"
    PAUSED = "paused"
    SHUTTING_DOWN = "shutting_down"
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    MISSING = "missing"


class Accel(StrEnum):
    """How guests are executed on a host."""

    KVM = "kvm"  # hardware virtualisation, <domain type='kvm'>
    TCG = "tcg"  # QEMU software emulation, <domain type='qemu'>
    TEST = "test"  # libvirt's test:/// driver, nothing really runs


@dataclass(frozen=True)
class DiskSpec:
    """A disk as the guest sees it."""

    path: Path
    target: str  # guest device name: vda, vdb, ...
    format: str = "qcow2"  # qcow2 | raw
    readonly: bool = False
    device: str = "disk"  # disk | cdrom
    bus: str = "virtio"
    shareable: bool = False  # True for read-only disks attached to several VMs


@dataclass(frozen=True)
class NicSpec:
    """A network interface on a libvirt network."""

    network: str  # libvirt network name
    mac: str


@dataclass(frozen=True)
class NetworkSpec:
    """An isolated hypervisor network (a bridge with no uplink and no forwarding).

    ``name`` is the hypervisor's network name, ``bridge`` the host bridge
    device (at most 15 characters). With ``host_address`` the bridge gets
    that IPv4 address with ``prefix`` on the host, so the host can reach the
    guests; without it the network is pure layer 2.
    """

    name: str
    bridge: str
    host_address: str | None = None
    prefix: int | None = None


@dataclass(frozen=True)
class DomainSpec:
    """Everything needed to define and boot one guest."""

    vm_id: str  # UUID; also the libvirt domain UUID
    vcpus: int
    memory_mib: int
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    kernel: Path | None = None  # direct kernel boot when set
    initrd: Path | None = None
    cmdline: str | None = None
    console_log: Path | None = None  # serial console is written here

    @property
    def domain_name(self) -> str:
        return DOMAIN_PREFIX + self.vm_id


@dataclass(frozen=True)
class HostInfo:
    """Static facts about one hypervisor host."""

    uri: str
    hostname: str
    cpus: int
    memory_mib: int
    accel: Accel
    arch: str = "x86_64"
    extra: dict[str, str] = field(default_factory=dict)


class HypervisorDriver(abc.ABC):
    """One hypervisor host. See the module docstring for the semantics."""

    uri: str
    owner: str = ""  # stamped on every domain this driver starts; filters list_domains

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the connection; raise ``HypervisorUnavailable`` if the host cannot be reached."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection. Idempotent."""

    @abc.abstractmethod
    async def host_info(self) -> HostInfo:
        """Capacity and accelerator of the host."""

    @abc.abstractmethod
    async def start(self, spec: DomainSpec) -> None:
        """Define and boot a domain.

        On failure nothing stays defined (raise ``DomainCreateFailed``).
        """

    @abc.abstractmethod
    async def shutdown(self, vm_id: str) -> None:
        """Ask the guest to power off (ACPI power button). Returns at once; poll ``state``."""

    @abc.abstractmethod
    async def destroy(self, vm_id: str) -> None:
        """Hard power-off. A missing or already stopped domain is not an error."""

    @abc.abstractmethod
    async def undefine(self, vm_id: str) -> None:
        """Remove the domain definition (destroying it first if running).

        Missing is not an error.
        """

    @abc.abstractmethod
    async def reboot(self, vm_id: str) -> None:
        """Reset the guest (hard reset; the console log continues).

        ``DomainNotFound`` if missing.
        """

    @abc.abstractmethod
    async def state(self, vm_id: str) -> DomainState:
        """Current state; ``MISSING`` when no such domain exists."""

    @abc.abstractmethod
    async def list_domains(self) -> dict[str, DomainState]:
        """Stratus domains on this host owned by ``self.owner``: vm_id -> state."""

    @abc.abstractmethod
    async def attach_disk(self, vm_id: str, disk: DiskSpec) -> None:
        """Hot-plug ``disk`` into the running domain (and its persistent definition)."""

    @abc.abstractmethod
    async def detach_disk(self, vm_id: str, target: str) -> None:
        """Hot-unplug the disk at guest device ``target``.

        ``DiskNotAttached`` (a ``DeviceError``) if the domain has no disk there.
        """

    @abc.abstractmethod
    async def ensure_network(self, spec: NetworkSpec) -> None:
        """Make the isolated network ``spec`` exist, run, and start with the host.

        Idempotent: an existing network of that name is kept as it is (started
        if inactive). ``NetworkError`` if it cannot be defined or started; a
        network this call defined is then removed again.
        """

    @abc.abstractmethod
    async def remove_network(self, name: str) -> None:
        """Stop and remove the network ``name``. A missing network is not an error."""
