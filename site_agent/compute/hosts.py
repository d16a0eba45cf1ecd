"""Placement of a VM on one of a site's hypervisor hosts: filter, then rank.

Filter: a host fits when it carries every required tag and, after
overcommit, has the free CPUs and memory the VM asks for::

    free_cpus   = cpus * overcommit_cpu - used_cpus
    free_memory = memory_mib * overcommit_ram - used_memory_mib

Rank (best first): most free memory, then fewest running VMs, then URI, so
that equal hosts are chosen deterministically. When nothing fits,
``NoHostAvailable`` says for each host why it was refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from site_agent.compute.driver import HostInfo
from site_agent.compute.errors import NoHostAvailable


@dataclass(frozen=True)
class HostLoad:
    """A host's capacity and what is in use on it (as the site's records say)."""

    uri: str
    cpus: int
    memory_mib: int
    used_cpus: int = 0
    used_memory_mib: int = 0
    running_vms: int = 0
    tags: frozenset[str] = frozenset()

    @classmethod
    def from_host_info(
        cls,
        info: HostInfo,
        *,
        used_cpus: int = 0,
        used_memory_mib: int = 0,
        running_vms: int = 0,
        tags: frozenset[str] = frozenset(),
    ) -> HostLoad:
        """The load of the host described by ``info`` (from ``HypervisorDriver.host_info``)."""
        return cls(
            uri=info.uri,
            cpus=info.cpus,
            memory_mib=info.memory_mib,
            used_cpus=used_cpus,
            used_memory_mib=used_memory_mib,
            running_vms=running_vms,
            tags=tags,
        )

    def free_cpus(self, overcommit: float = 1.0) -> float:
        """vCPUs still available with ``overcommit`` vCPUs per physical CPU."""
        return self.cpus * overcommit - self.used_cpus

    def free_memory_mib(self, overcommit: float = 1.0) -> float:
        """MiB still available with memory overcommitted by ``overcommit``."""
        return self.memory_mib * overcommit - self.used_memory_mib


def _refusal(
    host: HostLoad,
    *,
    vcpus: int,
    memory_mib: int,
    required_tags: frozenset[str],
    overcommit_cpu: float,
    overcommit_ram: float,
) -> str | None:
    """Why ``host`` cannot take the VM, or ``None`` if it can."""
    reasons = []
    missing = required_tags - host.tags
    if missing:
        reasons.append(f"missing tags {', '.join(sorted(missing))}")
    free_cpus = host.free_cpus(overcommit_cpu)
    if free_cpus < vcpus:
        reasons.append(f"needs {vcpus} vCPUs, {free_cpus:g} free")
    free_mem = host.free_memory_mib(overcommit_ram)
    if free_mem < memory_mib:
        reasons.append(f"needs {memory_mib} MiB, {free_mem:g} MiB free")
    return "; ".join(reasons) or None


def choose_host(
    hosts: Sequence[HostLoad],
    *,
    vcpus: int,
    memory_mib: int,
    required_tags: frozenset[str] = frozenset(),
    overcommit_cpu: float = 1.0,
    overcommit_ram: float = 1.0,
) -> HostLoad:
    """The best host for a VM of ``vcpus`` and ``memory_mib`` (see the module docstring).

    Raises ``NoHostAvailable`` (with a reason per host URI) when no host
    fits, including when ``hosts`` is empty, and ``ValueError`` for
    non-positive sizes or overcommit ratios.
    """
    if vcpus < 1 or memory_mib < 1:
        raise ValueError(f"a VM needs at least 1 vCPU and 1 MiB, not {vcpus}/{memory_mib}")
    if overcommit_cpu <= 0 or overcommit_ram <= 0:
        raise ValueError("overcommit ratios must be positive")
    reasons: dict[str, str] = {}
    fitting: list[HostLoad] = []
    for host in hosts:
        why = _refusal(
            host,
            vcpus=vcpus,
            memory_mib=memory_mib,
            required_tags=required_tags,
            overcommit_cpu=overcommit_cpu,
            overcommit_ram=overcommit_ram,
        )
        if why is None:
            fitting.append(host)
        else:
            reasons[host.uri] = why
    if not fitting:
        raise NoHostAvailable(reasons)
    return min(
        fitting,
        key=lambda h: (-h.free_memory_mib(overcommit_ram), h.running_vms, h.uri),
    )
