"""The configured address pools and the isolated hypervisor network of each.

A pool hands out, lowest first, the addresses ``range_start``..``range_end``
(default: every host address of ``cidr``) minus the ``gateway``, the
``host_address`` and the ``fixed`` ones. ``fixed`` addresses are leased only
to a create that names one in ``address``; a create may also name any free
address of the automatic range.

Each managed pool maps to an isolated libvirt network named
``stratus-<pool>-<first 8 chars of the site instance id>`` on a bridge
``st<11 hex digits>`` (a hash of instance id and pool name: at most 15
characters, as Linux wants), so two site installations (or test runs) on one
host never share or remove each other's networks.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from site_agent.compute.driver import NetworkSpec
from site_agent.config import NetworkPoolConfig
from site_agent.context.cidata import NetworkConfig
from site_agent.networks.errors import AddressInUse, AddressOutsidePool, PoolExhausted, UnknownPool


def libvirt_names(config: NetworkPoolConfig, instance_id: str) -> tuple[str, str]:
    """``(network name, bridge name)`` for a pool of the site instance ``instance_id``."""
    network = config.libvirt_network or f"stratus-{config.name}-{instance_id[:8]}"
    digest = hashlib.sha256(f"{instance_id}/{config.name}".encode()).hexdigest()
    return network, config.bridge or f"st{digest[:11]}"


@dataclass(frozen=True)
class AddressPool:
    """One pool: its addresses, and how a guest on it is configured."""

    config: NetworkPoolConfig
    network_name: str  # the hypervisor network
    bridge: str
    _fixed: frozenset[IPv4Address] = field(init=False, repr=False)
    _reserved: frozenset[IPv4Address] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        reserved = {a for a in (self.config.gateway, self.config.host_address) if a is not None}
        object.__setattr__(self, "_reserved", frozenset(reserved))
        object.__setattr__(self, "_fixed", frozenset(self.config.fixed) - reserved)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def first(self) -> IPv4Address:
        return self.config.range_start or self.config.cidr.network_address + 1

    @property
    def last(self) -> IPv4Address:
        return self.config.range_end or self.config.cidr.broadcast_address - 1

    def automatic(self) -> Iterator[IPv4Address]:
        """The addresses leased without being asked for, lowest first."""
        skip = self._reserved | self._fixed
        address = self.first
        while address <= self.last:
            if address not in skip:
                yield address
            address += 1

    @property
    def size(self) -> int:
        """How many addresses the pool can lease (automatic range plus fixed)."""
        in_range = int(self.last) - int(self.first) + 1
        carved = sum(1 for a in self._reserved | self._fixed if self.first <= a <= self.last)
        return in_range - carved + len(self._fixed)

    def contains(self, address: IPv4Address) -> bool:
        """True if ``address`` may be leased from this pool (automatic range or fixed)."""
        if address in self._fixed:
            return True
        return self.first <= address <= self.last and address not in self._reserved

    def pick(self, leased: set[str], wanted: IPv4Address | None = None) -> IPv4Address:
        """A free address: ``wanted`` if given and free, else the lowest free automatic one.

        ``AddressOutsidePool`` if ``wanted`` is not in the pool, ``AddressInUse`` if leased;
        ``PoolExhausted`` if no automatic address is free.
        """
        if wanted is not None:
            if not self.contains(wanted):
                where = f"{self.first}-{self.last}"
                if self._fixed:
                    where += f" or the fixed addresses {', '.join(map(str, sorted(self._fixed)))}"
                raise AddressOutsidePool(
                    f"address {wanted} is not in pool {self.name} (it leases {where})"
                )
            if str(wanted) in leased:
                raise AddressInUse(f"address {wanted} of pool {self.name} is already leased")
            return wanted
        for address in self.automatic():
            if str(address) not in leased:
                return address
        raise PoolExhausted(f"no free address in pool {self.name}")

    def network_spec(self) -> NetworkSpec:
        """The isolated hypervisor network of this pool."""
        host = self.config.host_address
        return NetworkSpec(
            name=self.network_name,
            bridge=self.bridge,
            host_address=str(host) if host is not None else None,
            prefix=self.config.cidr.prefixlen if host is not None else None,
        )

    def guest_config(self, address: str, mac: str) -> NetworkConfig:
        """The cidata ``network-config`` of a guest leased ``address`` with ``mac``."""
        gateway = self.config.gateway
        return NetworkConfig(
            mac=mac,
            address=str(ipaddress.IPv4Address(address)),
            prefix=self.config.cidr.prefixlen,
            gateway=str(gateway) if gateway is not None else None,
            dns=tuple(str(d) for d in self.config.dns),
        )


class NetworkPools:
    """The site's pools by name; the first configured one is the default."""

    def __init__(self, configs: Iterable[NetworkPoolConfig], instance_id: str) -> None:
        self._pools: dict[str, AddressPool] = {}
        for config in configs:
            network, bridge = libvirt_names(config, instance_id)
            self._pools[config.name] = AddressPool(config, network, bridge)

    def __iter__(self) -> Iterator[AddressPool]:
        return iter(self._pools.values())

    def __len__(self) -> int:
        return len(self._pools)

    def get(self, name: str | None) -> AddressPool:
        """The pool ``name``, or the default pool for ``None``; ``UnknownPool`` otherwise."""
        if not self._pools:
            raise UnknownPool("this site has no networks")
        if name is None:
            return next(iter(self._pools.values()))
        try:
            return self._pools[name]
        except KeyError:
            known = ", ".join(self._pools)
            raise UnknownPool(f"no network {name!r} at this site (known: {known})") from None
