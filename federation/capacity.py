"""A site's heartbeat (:class:`core.site_report.SiteReport`) as placement reads it.

The broker's site registry calls :func:`capacity_from_report` on every
heartbeat and feeds the result to :meth:`federation.placement.Placer.update`.
"""

from __future__ import annotations

from ipaddress import IPv4Network

from core.site_report import SiteReport
from federation.model import HostCapacity, PoolCapacity, SiteCapacity


def capacity_from_report(report: SiteReport, *, at: float | None = None) -> SiteCapacity:
    """The placer's view of ``report``, received at ``at`` (seconds since the epoch).

    Hosts keep their free CPUs, RAM and tags; pools keep their order, type,
    CIDR, free addresses and default flag; ``free_addresses`` is the site's
    own sum per type. ``at=None``: the report counts as made now (no staleness).
    ``ValueError`` if a pool's CIDR is not an IPv4 network (a report to refuse).
    """
    return SiteCapacity(
        site=report.site,
        hosts=[
            HostCapacity(h.free_cpus, h.free_memory_mib, frozenset(h.tags)) for h in report.hosts
        ],
        cached_images=frozenset(report.cached_images),
        fetchable_images=(
            None if report.fetchable_images is None else frozenset(report.fetchable_images)
        ),
        free_addresses=dict(report.free_addresses),
        pools={
            p.name: PoolCapacity(p.type, IPv4Network(p.cidr), p.free, p.default)
            for p in report.networks
        },
        allowed_vos=None if report.allowed_vos is None else frozenset(report.allowed_vos),
        location=dict(report.location),
        price_per_hour=report.price_per_hour,
        available=report.available,
        last_heartbeat=at,
    )
