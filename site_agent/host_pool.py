"""The site's hypervisor hosts: one driver per configured libvirt URI.

A host that cannot be reached at start-up is kept (its VMs still list) but
is not offered to placement until it answers again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from site_agent.compute.driver import Accel, HostInfo, HypervisorDriver
from site_agent.compute.errors import ComputeError
from site_agent.compute.hosts import HostLoad
from site_agent.config import HostConfig

log = logging.getLogger(__name__)

_ACCEL = {"auto": None, "kvm": Accel.KVM, "tcg": Accel.TCG}


def make_driver(config: HostConfig) -> HypervisorDriver:
    """The driver for a host URI: ``fake://`` gives the in-memory fake, anything else libvirt."""
    if config.uri.startswith("fake://"):
        from site_agent.compute.fake_driver import FakeDriver

        return FakeDriver(config.uri)
    from site_agent.compute.libvirt_driver import LibvirtDriver

    return LibvirtDriver(config.uri, accel=_ACCEL[config.accel])


@dataclass
class Host:
    config: HostConfig
    driver: HypervisorDriver
    info: HostInfo | None = None

    @property
    def uri(self) -> str:
        return self.config.uri

    @property
    def simulated(self) -> bool:
        """True for a ``fake://`` host: the in-memory fake driver, whose VMs run nothing."""
        return self.uri.startswith("fake://")


class HostPool:
    """Drivers and capacity of every host of the site."""

    def __init__(self, hosts: Iterable[Host]) -> None:
        self.hosts = {host.uri: host for host in hosts}

    @classmethod
    def from_config(cls, configs: Iterable[HostConfig]) -> HostPool:
        return cls(Host(config=c, driver=make_driver(c)) for c in configs)

    async def connect(self, owner: str) -> None:
        """Connect every host; an unreachable host is logged and left out of placement.

        ``owner`` (the site's instance id) is stamped on every domain the
        drivers start, and only domains with it are listed back.
        """
        for host in self.hosts.values():
            host.driver.owner = owner
            try:
                await host.driver.connect()
                host.info = await host.driver.host_info()
                log.info(
                    "host %s: %d CPUs, %d MiB, accel %s",
                    host.uri,
                    host.info.cpus,
                    host.info.memory_mib,
                    host.info.accel,
                )
            except ComputeError as exc:
                host.info = None
                log.error("host %s unavailable: %s", host.uri, exc)

    async def close(self) -> None:
        for host in self.hosts.values():
            await host.driver.close()

    def driver(self, uri: str) -> HypervisorDriver:
        return self.hosts[uri].driver

    def accel(self, uri: str) -> Accel | None:
        info = self.hosts[uri].info
        return info.accel if info else None

    def loads(self, usage: dict[str, tuple[int, int, int]]) -> list[HostLoad]:
        """Capacity of the reachable hosts, after overcommit and reserved memory.

        ``usage`` maps a host URI to ``(vcpus, memory_mib, vm_count)`` in use.
        """
        loads = []
        for host in self.hosts.values():
            if host.info is None:
                continue
            cfg = host.config
            used_cpus, used_mem, count = usage.get(host.uri, (0, 0, 0))
            loads.append(
                HostLoad(
                    uri=host.uri,
                    cpus=int(host.info.cpus * cfg.cpu_overcommit),
                    memory_mib=int(
                        max(0, host.info.memory_mib - cfg.reserved_memory_mib) * cfg.ram_overcommit
                    ),
                    used_cpus=used_cpus,
                    used_memory_mib=used_mem,
                    running_vms=count,
                    tags=frozenset(cfg.tags),
                )
            )
        return loads
