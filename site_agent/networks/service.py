"""What the VM lifecycle and the API ask of the network pools.

Allocation (:meth:`NetworkService.plan`) only computes lease rows; the VM
lifecycle inserts them with the VM rows in one transaction while it holds
its placement lock, so two concurrent creates never get the same address,
and a create that fails stores no lease. Leases are released when a VM ends
(:meth:`release`), and :meth:`release_finished` sweeps any lease of a VM
that is already ``done``/``failed`` (run by every reconciliation).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address
from typing import Any, TypeVar

from auth.principal import Principal
from core.resources.networks import LeasePublic, NetworkDetail, NetworkPublic, NetworkType
from site_agent.compute.driver import HypervisorDriver, NicSpec
from site_agent.compute.errors import ComputeError
from site_agent.context.cidata import NetworkConfig
from site_agent.networks.models import Lease
from site_agent.networks.pools import AddressPool, NetworkPools
from site_agent.networks.repository import LeaseRepository

log = logging.getLogger(__name__)

T = TypeVar("T")


def random_mac() -> str:
    """A random locally administered unicast MAC (first octet ``02``)."""
    return "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))


class NetworkService:
    """Pools, leases and the hypervisor networks behind them."""

    def __init__(self, repo: LeaseRepository, pools: NetworkPools) -> None:
        self.repo = repo
        self.pools = pools

    @staticmethod
    async def _db(fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    # ----- hypervisor networks -----------------------------------------------

    async def ensure_networks(self, drivers: Iterable[HypervisorDriver]) -> list[str]:
        """Make every managed pool's isolated network exist on each host; returns problems.

        A host that refuses is logged (VMs with a NIC then fail to start there)
        but does not stop the agent.
        """
        problems = []
        for driver in drivers:
            for pool in self.pools:
                if not pool.config.managed:
                    continue
                try:
                    await driver.ensure_network(pool.network_spec())
                except ComputeError as exc:
                    problems.append(f"{driver.uri}: network of pool {pool.name}: {exc}")
        for problem in problems:
            log.error("%s", problem)
        return problems

    async def remove_networks(self, drivers: Iterable[HypervisorDriver]) -> None:
        """Remove every managed pool's network from each host (tests, decommissioning)."""
        for driver in drivers:
            for pool in self.pools:
                if pool.config.managed:
                    await driver.remove_network(pool.network_name)

    # ----- leases --------------------------------------------------------------

    def pool(self, name: str | None) -> AddressPool:
        """The pool ``name`` (default pool for ``None``); ``UnknownPool`` if there is none."""
        return self.pools.get(name)

    async def plan(
        self,
        vm_ids: list[str],
        owner: str,
        network: str | None,
        address: IPv4Address | None,
    ) -> list[Lease]:
        """Lease rows (not stored) giving each VM an address and a fresh MAC.

        Call under the lifecycle's placement lock and store the rows with the
        VMs. Raises ``UnknownPool``, ``AddressUnavailable`` or ``PoolExhausted``.
        """
        pool = self.pool(network)
        leased: set[str] = await self._db(self.repo.leased_addresses, pool.name)
        rows = []
        for index, vm_id in enumerate(vm_ids):
            picked = pool.pick(leased, address if index == 0 else None)
            leased.add(str(picked))
            rows.append(
                Lease(pool=pool.name, address=str(picked), mac="", vm_id=vm_id, owner=owner)
            )
        while True:  # MACs: 40 random bits each; redraw the (astronomically rare) clash
            macs = [random_mac() for _ in rows]
            taken: set[str] = await self._db(self.repo.macs_in_use, macs)
            if not taken and len(set(macs)) == len(macs):
                break
        for row, mac in zip(rows, macs, strict=True):
            row.mac = mac
        return rows

    async def lease_of(self, vm_id: str) -> Lease | None:
        lease: Lease | None = await self._db(self.repo.lease_of, vm_id)
        return lease

    def boot_config(self, lease: Lease) -> tuple[NicSpec, NetworkConfig]:
        """The NIC of the domain and the cidata network-config of the guest for ``lease``."""
        pool = self.pool(lease.pool)
        return (
            NicSpec(network=pool.network_name, mac=lease.mac),
            pool.guest_config(lease.address, lease.mac),
        )

    async def release(self, vm_id: str) -> list[Lease]:
        """Free the VM's leases (idempotent); returns what was freed."""
        rows: list[Lease] = await self._db(self.repo.release_vm, vm_id)
        for row in rows:
            log.info(
                "released %s (%s) of pool %s from VM %s", row.address, row.mac, row.pool, vm_id
            )
        return rows

    async def release_finished(self) -> int:
        """Free the leases of VMs already ``done``/``failed`` (safety net); returns how many."""
        count: int = await self._db(self.repo.release_finished)
        if count:
            log.warning("released %d lease(s) of finished VMs", count)
        return count

    # ----- API views ----------------------------------------------------------------

    def _public(self, pool: AddressPool, leased: int, default: bool) -> NetworkPublic:
        cfg = pool.config
        return NetworkPublic(
            name=pool.name,
            type=NetworkType(cfg.type),
            cidr=str(cfg.cidr),
            gateway=str(cfg.gateway) if cfg.gateway else None,
            dns=[str(d) for d in cfg.dns],
            default=default,
            size=pool.size,
            leased=leased,
            free=max(0, pool.size - leased),
        )

    async def summaries(self) -> list[NetworkPublic]:
        """Every pool with its size and lease counts, the default first."""
        counts: dict[str, int] = await self._db(self.repo.counts)
        return [
            self._public(pool, counts.get(pool.name, 0), index == 0)
            for index, pool in enumerate(self.pools)
        ]

    async def detail(self, principal: Principal, name: str) -> NetworkDetail:
        """One pool; admins see every lease, others only their own. ``UnknownPool`` if none."""
        pool = self.pools.get(name)
        owner = None if principal.is_admin else principal.account
        every: list[Lease] = await self._db(self.repo.leases, pool.name)
        visible = [lease for lease in every if owner is None or lease.owner == owner]
        default = next(iter(self.pools)).name == pool.name
        base = self._public(pool, len(every), default)
        return NetworkDetail(
            **base.model_dump(),
            range_start=str(pool.first),
            range_end=str(pool.last),
            fixed=[str(a) for a in sorted(pool.config.fixed)],
            leases=[LeasePublic.model_validate(lease.model_dump()) for lease in visible],
        )
