"""What this site can take right now, as the heartbeat reports it to its broker.

:class:`CapacityReport` builds a :class:`core.site_report.SiteReport` (the one
model both sides validate) from the services it is given, never from the
aiohttp application:

* ``hosts``: free CPUs and RAM of every reachable host, the figures the site's
  own host placement uses (overcommit and reserved memory applied, every VM
  not yet terminal counted), with the host's tags; a ``fake://`` host is
  reported ``simulated`` (its VMs run nothing);
* ``cached_images``: public images a VM can boot at once (configured, or in
  the cache); ``fetchable_images``: public images registered but not cached
  yet (fetched on first use). Only public images count: the broker's
  account at the site sees nobody's private images;
* ``networks``: every address pool by name, with its type, CIDR, free
  addresses and whether it is the default; ``free_addresses``: the free
  addresses summed per pool type;
* from ``[federation]``: the site's public URL, price, location and the VOs
  it accepts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version

from auth.principal import Principal
from core.resources.images import ImageState
from core.resources.networks import NetworkType
from core.site_report import HostReport, PoolReport, SiteReport
from site_agent.config import FederationLinkConfig
from site_agent.host_pool import HostPool
from site_agent.images.cache import ImageCache
from site_agent.networks.service import NetworkService

#: Per host URI, ``(vcpus, memory_mib, vm_count)`` held by VMs that are not terminal.
HostUsage = Callable[[], Awaitable[dict[str, tuple[int, int, int]]]]

#: Who lists the images for the report: nobody in particular, so only public images show.
_VIEWER = Principal(account="federation", identity="federation heartbeat", method="token")


def _version() -> str | None:
    try:
        return version("stratus-federation")
    except PackageNotFoundError:  # running from a tree that was never installed
        return None


class CapacityReport:
    """Builds the site's heartbeat report from its hosts, VM usage, images and pools."""

    def __init__(
        self,
        *,
        site: str,
        link: FederationLinkConfig,
        hosts: HostPool,
        usage: HostUsage,
        images: ImageCache,
        networks: NetworkService,
    ) -> None:
        self.site = site
        self.link = link
        self.hosts = hosts
        self.usage = usage
        self.images = images
        self.networks = networks

    async def hosts_report(self) -> list[HostReport]:
        """Free capacity of every reachable host (unreachable hosts are left out)."""
        usage = await self.usage()
        return [
            HostReport(
                name=load.uri,
                free_cpus=max(0, int(load.cpus - load.used_cpus)),
                free_memory_mib=max(0, int(load.memory_mib - load.used_memory_mib)),
                tags=sorted(load.tags),
                simulated=self.hosts.hosts[load.uri].simulated,
            )
            for load in self.hosts.loads(usage)
        ]

    async def pools_report(self) -> list[PoolReport]:
        """Every address pool with its free addresses, the default first."""
        return [
            PoolReport(name=p.name, type=p.type, cidr=p.cidr, free=p.free, default=p.default)
            for p in await self.networks.summaries()
        ]

    async def report(self) -> SiteReport:
        """The heartbeat report now (see the module docstring)."""
        hosts = await self.hosts_report()
        pools = await self.pools_report()
        free: dict[NetworkType, int] = {}
        for pool in pools:
            free[pool.type] = free.get(pool.type, 0) + pool.free
        images = [i for i in await self.images.list_for(_VIEWER) if i.public]
        return SiteReport(
            site=self.site,
            public_url=self.link.public_url,
            hosts=hosts,
            cached_images=sorted(
                i.name for i in images if i.available and i.state == ImageState.READY
            ),
            fetchable_images=sorted(i.name for i in images if i.state == ImageState.PENDING),
            networks=pools,
            free_addresses=free,
            allowed_vos=self.link.allowed_vos,
            location=dict(self.link.location),
            price_per_hour=self.link.price_per_hour,
            available=bool(hosts),
            version=_version(),
        )
