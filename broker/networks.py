"""Networks through the broker: every site's address pools, each with its ``site``.

``GET /networks`` asks every available site at once (each within
``list_timeout_seconds``); an unavailable or silent site makes the listing
``partial`` with a warning.  ``GET /networks/{name}`` shows one pool: of the
site given with ``?site=``, or of the only site that has a pool of that name
(several: ``409 ambiguous_network`` naming them).  Leases are the caller's
VMs' only (admins: every broker VM's), with the broker's VM ids and owners:
at the site every lease of the broker belongs to its account.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydField

from auth.principal import Principal
from broker.errors import SiteUnreachable, UnknownSite
from broker.models import SITE_NAME_PATTERN
from broker.service import Broker
from broker.sites import SiteOperationRefused
from broker.volumes import VolumeStore, forwarded
from core.errors import Conflict, NotFound
from federation.errors import SiteFailed, VMNotFound


class BrokerNetworkPublic(BaseModel):
    """A site's address pool (the site's shape) and the site it belongs to."""

    name: str
    type: str
    cidr: str
    gateway: str | None
    dns: list[str]
    default: bool
    size: int
    leased: int
    free: int
    site: str


class BrokerNetworkList(BaseModel):
    networks: list[BrokerNetworkPublic]
    partial: bool = False
    warnings: list[str] = PydField(default_factory=list)


class BrokerLease(BaseModel):
    address: str
    mac: str
    vm_id: str = PydField(description="the broker's VM id")
    owner: str
    created_at: datetime


class BrokerNetworkDetail(BrokerNetworkPublic):
    range_start: str
    range_end: str
    fixed: list[str]
    leases: list[BrokerLease]


class NetworkShowQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    site: str | None = PydField(
        default=None, pattern=SITE_NAME_PATTERN, description="the site of the pool"
    )


class NetworkService:
    """The broker's ``/networks`` (read-only; see the module docstring)."""

    def __init__(self, broker: Broker) -> None:
        self.registry = broker.registry
        self.config = broker.config
        self.store = VolumeStore(broker.store.engine)

    async def list_networks(self, principal: Principal) -> BrokerNetworkList:
        """Every available site's pools; unavailable or silent sites are named in warnings."""
        del principal  # any user may see the pools
        timeout = self.config.broker.list_timeout_seconds
        warnings: list[str] = []
        names = self.registry.site_names()

        async def one(site: str) -> list[dict[str, Any]]:
            available, reason = self.registry.status(site)
            if not available:
                warnings.append(f"{reason}; its networks are not listed")
                return []
            try:
                async with asyncio.timeout(timeout):
                    body = await self.registry.site_provider(site).forward("GET", "/networks")
            except (SiteFailed, SiteOperationRefused, VMNotFound, TimeoutError) as exc:
                detail = exc.reason if isinstance(exc, SiteFailed) else None
                detail = detail or str(exc) or f"no answer within {timeout:g}s"
                warnings.append(f"site {site} did not answer ({detail}); listing is partial")
                return []
            items = body.get("networks", []) if isinstance(body, dict) else []
            return [n for n in items if isinstance(n, dict)]

        answers = await asyncio.gather(*(one(site) for site in names))
        pools = [
            BrokerNetworkPublic.model_validate({**pool, "site": site})
            for site, site_pools in zip(names, answers, strict=True)
            for pool in site_pools
        ]
        return BrokerNetworkList(networks=pools, partial=bool(warnings), warnings=sorted(warnings))

    async def show(self, principal: Principal, name: str, site: str | None) -> BrokerNetworkDetail:
        """One pool with the caller's leases; ``site`` None: the only site having it."""
        if site is not None:
            if not self.registry.is_site(site):
                raise UnknownSite(
                    f"unknown site {site!r}", details={"known": self.registry.site_names()}
                )
            return await self._detail(principal, site, name)
        holders = [
            pool.site
            for pool in (await self.list_networks(principal)).networks
            if pool.name == name
        ]
        if not holders:
            raise NotFound(f"no network {name!r} at any available site")
        if len(holders) > 1:
            raise Conflict(
                f"sites {', '.join(holders)} all have a network {name!r}: give ?site=",
                code="ambiguous_network",
                details={"sites": holders},
            )
        return await self._detail(principal, holders[0], name)

    async def _detail(self, principal: Principal, site: str, name: str) -> BrokerNetworkDetail:
        available, reason = self.registry.status(site)
        if not available:
            raise SiteUnreachable(f"cannot show network {name!r}: {reason}")
        provider = self.registry.site_provider(site)
        body = await forwarded(site, provider.forward("GET", "/networks/" + quote(name, safe="")))
        if not isinstance(body, dict):
            raise SiteUnreachable(f"site {site} sent a malformed network")
        leases = [lease for lease in body.get("leases") or [] if isinstance(lease, dict)]
        vms = await asyncio.to_thread(
            self.store.vms_at, site, [str(lease.get("vm_id")) for lease in leases]
        )
        mine = []
        for lease in leases:
            vm = vms.get(str(lease.get("vm_id")))
            if vm is not None and principal.can_access(vm.owner, vm.group):
                mine.append({**lease, "vm_id": vm.id, "owner": vm.owner})
        return BrokerNetworkDetail.model_validate({**body, "site": site, "leases": mine})
