"""Heartbeats and ``/sites``: what the federation is made of, as users see it.

A heartbeat (already authenticated as site ``name`` by its certificate,
:mod:`broker.api.site_auth`) is stored (so other broker replicas see it),
fed to the registry and the placer, and wakes the queue. A site that comes
back after an outage gets a ``site ... is back`` event on each of its VMs.
``GET /sites`` shows every trusted site (status, free capacity, whether it
runs on simulated hosts) and every public cloud.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from broker.errors import UnknownSite
from broker.runtime import Runtime, db
from broker.sites.models import ProviderKind, SiteList, SitePublic
from core.site_report import HeartbeatAck, SiteReport

log = logging.getLogger(__name__)


class SiteService:
    """Heartbeats in, the sites listing out (see the module docstring)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def heartbeat(self, name: str, report: SiteReport) -> HeartbeatAck:
        """Take a heartbeat of a site already authenticated as ``name``."""
        registry = self.rt.registry
        trusted = registry.trusted(name)
        assert trusted is not None
        registered, was_down, at = registry.heartbeat(name, report)
        await db(
            self.rt.sites.save_heartbeat,
            name,
            trusted.dn,
            report.public_url,
            report.model_dump(mode="json"),
            datetime.fromtimestamp(at, UTC),
        )
        if registered:
            log.info("site %s registered from %s", name, report.public_url)
        if was_down:
            log.info("site %s is back", name)
            ids = await db(self.rt.vms.on_site, name)
            await db(self.rt.vms.add_events, ids, f"site {name} is back (heartbeat received)")
        self.rt.wake.set()
        return HeartbeatAck(
            site=name,
            registered=registered,
            heartbeat_timeout_seconds=self.rt.config.broker.heartbeat_timeout_seconds,
        )

    async def note_outages(self) -> None:
        """Record in their VMs' events that a site became unavailable (once per outage)."""
        for site, reason in self.rt.registry.newly_down():
            log.warning("%s", reason)
            ids = await db(self.rt.vms.on_site, site)
            await db(
                self.rt.vms.add_events,
                ids,
                f"{reason}; the VM is shown as unknown until the site is back (nothing deleted)",
                site=site,
            )

    async def sites(self) -> SiteList:
        counts = await db(self.rt.vms.active_counts)
        registry = self.rt.registry
        out: list[SitePublic] = []
        for name in registry.site_names():
            available, reason = registry.status(name)
            report = registry.report(name)
            last = registry.last_heartbeat(name)
            status = (
                "available"
                if available
                else ("never-registered" if report is None else "unavailable")
            )
            site = SitePublic(
                name=name,
                kind=ProviderKind.SITE,
                status=status,
                reason=reason,
                vms=counts.get(name, 0),
            )
            if report is not None and last is not None:
                cap = self.rt.placer.capacity(name)
                hosts = list(cap.hosts) if cap is not None else []
                site.simulated = report.simulated
                site.url = report.public_url
                site.last_heartbeat = datetime.fromtimestamp(last, UTC)
                site.hosts = len(hosts)
                site.free_cpus = sum(h.free_cpus for h in hosts)
                site.free_memory_mib = sum(h.free_memory_mib for h in hosts)
                site.largest_free_cpus = max((h.free_cpus for h in hosts), default=0)
                site.largest_free_memory_mib = max((h.free_memory_mib for h in hosts), default=0)
                site.cached_images = sorted(report.cached_images)
                site.networks = [p.name for p in report.networks]
                site.host_tags = sorted({t for h in report.hosts for t in h.tags})
                site.location = dict(report.location)
                site.price_per_hour = report.price_per_hour
            out.append(site)
        for cloud in self.rt.config.clouds:
            prices = [s.price_per_hour for s in cloud.sizes.values()]
            out.append(
                SitePublic(
                    name=cloud.name,
                    kind=ProviderKind.CLOUD,
                    status="available",
                    reason="public cloud for bursting (not health-checked)",
                    simulated=registry.provider(cloud.name).simulated,
                    cached_images=sorted(cloud.images),
                    price_per_hour=min(prices) if prices else None,
                    vms=counts.get(cloud.name, 0),
                )
            )
        return SiteList(sites=out)

    async def site(self, name: str) -> SitePublic:
        for site in (await self.sites()).sites:
            if site.name == name:
                return site
        raise UnknownSite(
            f"unknown site {name!r}", details={"known": self.rt.registry.site_names()}
        )
