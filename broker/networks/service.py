"""Networks through the broker: every site's address pools, each with its ``site``.

``GET /networks`` asks every available site at once (as the caller, each
within ``list_timeout_seconds``); an unavailable or silent site makes the
listing ``partial`` with a warning. ``GET /networks/{name}`` shows one
pool: of the site given with ``?site=``, or of the only site that has a
pool of that name (several: ``409 ambiguous_network`` naming them). Leases
are those of the caller's VMs the broker made (admins: every broker VM's
the site shows them), with the broker's VM ids and owners.
"""

from __future__ import annotations

import asyncio

from auth.principal import Principal
from broker.errors import Ambiguous, NetworkNotFound
from broker.networks.models import BrokerNetworkDetail, BrokerNetworkList, BrokerNetworkPublic
from broker.runtime import Runtime, db
from core.resources.networks import NetworkPublic
from federation.errors import ProviderError
from federation.providers.base import Operation


class NetworkService:
    """The broker's ``/networks`` (read-only; see the module docstring)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def list_networks(self, principal: Principal) -> BrokerNetworkList:
        """Every available site's pools; unavailable or silent sites are named in warnings."""
        timeout = self.rt.list_timeout
        warnings: list[str] = []
        names = [
            n
            for n in self.rt.registry.site_names()
            if not self.rt.registry.status(n)[0]
            or self.rt.registry.provider(n).supports(Operation.NETWORKS)
        ]

        async def one(site: str) -> list[NetworkPublic]:
            available, reason = self.rt.registry.status(site)
            if not available:
                warnings.append(f"{reason}; its networks are not listed")
                return []
            provider = self.rt.registry.provider(site).acting_for(self.rt.user(principal))
            try:
                async with asyncio.timeout(timeout):
                    return await provider.list_networks()
            except (ProviderError, TimeoutError) as exc:
                detail = exc.reason if isinstance(exc, ProviderError) else None
                detail = detail or f"no answer within {timeout:g}s"
                warnings.append(f"site {site} did not answer ({detail}); listing is partial")
                return []

        answers = await asyncio.gather(*(one(site) for site in names))
        pools = [
            BrokerNetworkPublic(**pool.model_dump(), site=site)
            for site, site_pools in zip(names, answers, strict=True)
            for pool in site_pools
        ]
        return BrokerNetworkList(networks=pools, partial=bool(warnings), warnings=sorted(warnings))

    async def show(self, principal: Principal, name: str, site: str | None) -> BrokerNetworkDetail:
        """One pool with the caller's leases; ``site`` None: the only site having it."""
        if site is not None:
            self.rt.registry.check_site(site)
            return await self._detail(principal, site, name)
        holders = [
            pool.site
            for pool in (await self.list_networks(principal)).networks
            if pool.name == name
        ]
        if not holders:
            raise NetworkNotFound(f"no network {name!r} at any available site")
        if len(holders) > 1:
            raise Ambiguous(
                f"sites {', '.join(holders)} all have a network {name!r}: give ?site=",
                code="ambiguous_network",
                details={"sites": holders},
            )
        return await self._detail(principal, holders[0], name)

    async def _detail(self, principal: Principal, site: str, name: str) -> BrokerNetworkDetail:
        provider = self.rt.registry.usable(site, f"show network {name!r}")
        detail = await provider.acting_for(self.rt.user(principal)).get_network(name)
        vms = await db(self.rt.vms.refs_at, site, [lease.vm_id for lease in detail.leases])
        mine = []
        for lease in detail.leases:
            vm = vms.get(lease.vm_id)
            if vm is not None and principal.can_access(vm.owner, vm.group):
                mine.append(lease.model_copy(update={"vm_id": vm.id, "owner": vm.owner}))
        return BrokerNetworkDetail(**detail.model_dump(exclude={"leases"}), leases=mine, site=site)
