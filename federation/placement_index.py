"""Per-site aggregates and the filters of placement (used by :mod:`federation.placement`).

A :class:`SiteEntry` is computed once per capacity report (and after each
reservation), so that a decision costs a few comparisons per site:

* a *skyline* of the site's hosts (the hosts not dominated in both free CPUs
  and free RAM), sorted by CPUs ascending with RAM descending, so "does one
  host have ``c`` CPUs and ``m`` MiB free at once" is a single ``bisect``;
  hosts with tags are also kept apart, with the union of their tags, for
  requests that ask for tags (rare, so a scan of the tagged hosts);
* the request-independent part of the score (free capacity and price);
* the free addresses of every pool and every pool type, lowered by
  reservations until the next report.

The request-dependent part of the score (:func:`score`, :func:`components`)
is here too; the filters are in :mod:`federation.placement_filters`.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass

from core.resources.networks import NetworkType
from federation.model import PlacementRequest, SiteCapacity


@dataclass(frozen=True)
class RankWeights:
    """Weights of the ranking terms (all >= 0) and the references that normalise them.

    Defaults: a preferred site wins over anything else the federation can
    offer (``user_preference=3``), then data locality (2), then free capacity
    and price (1 each), then a cached image (0.5: fetching an image costs
    minutes, not money).
    """

    free_capacity: float = 1.0
    price: float = 1.0
    image_cached: float = 0.5
    data_locality: float = 2.0
    user_preference: float = 3.0
    capacity_reference_cpus: float = 64.0
    capacity_reference_memory_mib: float = 256.0 * 1024
    price_reference: float = 0.05

    def __post_init__(self) -> None:
        for name in ("free_capacity", "price", "image_cached", "data_locality", "user_preference"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"weight {name} must be a finite number >= 0, not {value!r}")
        for name in ("capacity_reference_cpus", "capacity_reference_memory_mib", "price_reference"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")


END: tuple[float, str] = (math.inf, "")  # the key past the end of an index


def matches(tags: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(tags.get(k) == v for k, v in wanted.items())


class SiteEntry:
    """Per-site aggregates computed once per capacity report."""

    __slots__ = (
        "cap",
        "cpus",
        "host_tags",
        "key",
        "max_cpus",
        "max_memory",
        "memory",
        "name",
        "pool_free",
        "sky_cpus",
        "sky_memory",
        "static",
        "tagged",
        "total_cpus",
        "total_memory",
        "type_free",
        "type_pool",
    )

    def __init__(self, cap: SiteCapacity, weights: RankWeights) -> None:
        self.cap = cap
        self.name = cap.site
        # [free CPUs, free MiB, tags]: mutable, lowered by reservations.
        # Free CPUs and MiB per host, lowered by reservations. Arrays, not one list per
        # host: thousands of sites of hundreds of hosts would otherwise be millions of
        # objects for the garbage collector to walk.
        self.cpus = array("q", [h.free_cpus for h in cap.hosts])
        self.memory = array("q", [h.free_memory_mib for h in cap.hosts])
        self.tagged = [i for i, h in enumerate(cap.hosts) if h.tags]  # indexes of tagged hosts
        self.host_tags: frozenset[str] = frozenset().union(
            *(cap.hosts[i].tags for i in self.tagged)
        )
        self.pool_free = {name: pool.free for name, pool in cap.pools.items()}
        self.type_free: dict[NetworkType, int] = dict(cap.free_addresses)
        self.type_pool: dict[NetworkType, str] = {}
        self.sky_cpus: list[int] = []
        self.sky_memory: list[int] = []
        self.max_cpus = 0
        self.max_memory = 0
        self.total_cpus = 0
        self.total_memory = 0
        self.static = 0.0
        self.key: tuple[float, str] = (0.0, self.name)
        self.recompute(weights)

    def recompute(self, weights: RankWeights) -> None:
        """Rebuild the skyline, the static score and the pool per type from the free counts."""
        self.type_pool = {}
        for name, pool in self.cap.pools.items():
            if self.pool_free.get(name, 0) > 0:
                chosen = self.type_pool.get(pool.type)
                if chosen is None or (pool.default and not self.cap.pools[chosen].default):
                    self.type_pool[pool.type] = name
        cpus_desc: list[int] = []
        memory_asc: list[int] = []
        best_memory = -1
        total_cpus = 0
        total_memory = 0
        # Most CPUs first, then most RAM: the same order as sorting by (-cpus, -memory).
        for cpus, memory in sorted(zip(self.cpus, self.memory, strict=True), reverse=True):
            total_cpus += cpus
            total_memory += memory
            if memory > best_memory:
                best_memory = memory
                cpus_desc.append(cpus)
                memory_asc.append(memory)
        cpus_desc.reverse()
        memory_asc.reverse()
        self.sky_cpus = cpus_desc
        self.sky_memory = memory_asc
        self.max_cpus = cpus_desc[-1] if cpus_desc else 0
        self.max_memory = memory_asc[0] if memory_asc else 0
        self.total_cpus = total_cpus
        self.total_memory = total_memory
        c_ref = weights.capacity_reference_cpus
        m_ref = weights.capacity_reference_memory_mib
        capacity = 0.5 * total_cpus / (total_cpus + c_ref) + 0.5 * total_memory / (
            total_memory + m_ref
        )
        price = weights.price_reference / (weights.price_reference + self.cap.price_per_hour)
        self.static = weights.free_capacity * capacity + weights.price * price
        self.key = (-self.static, self.name)

    def fits(self, vcpus: int, memory_mib: int) -> bool:
        """True if one host has ``vcpus`` and ``memory_mib`` free at the same time."""
        i = bisect_left(self.sky_cpus, vcpus)
        return i < len(self.sky_cpus) and self.sky_memory[i] >= memory_mib

    def hosts_with(self, tags: frozenset[str]) -> list[int]:
        """Indexes of the hosts carrying every tag of ``tags``."""
        hosts = self.cap.hosts
        return [i for i in self.tagged if tags <= hosts[i].tags]

    def fits_tagged(self, vcpus: int, memory_mib: int, tags: frozenset[str]) -> bool:
        """True if one host with every tag of ``tags`` has the CPUs and RAM free."""
        cpus, memory = self.cpus, self.memory
        return any(cpus[i] >= vcpus and memory[i] >= memory_mib for i in self.hosts_with(tags))

    def fitting_host(
        self, vcpus: int, memory_mib: int, tags: frozenset[str] = frozenset()
    ) -> int | None:
        """The index of the tightest host (fewest CPUs, then least RAM) with the tags and
        enough free, or None."""
        cpus, memory = self.cpus, self.memory
        best: int | None = None
        for i in self.hosts_with(tags) if tags else range(len(cpus)):
            fits = cpus[i] >= vcpus and memory[i] >= memory_mib
            if fits and (best is None or (cpus[i], memory[i]) < (cpus[best], memory[best])):
                best = i
        return best


class SiteIndex:
    """Sites sorted by static score (best first), ties by name."""

    __slots__ = ("keys", "sites")

    def __init__(self) -> None:
        self.keys: list[tuple[float, str]] = []
        self.sites: list[SiteEntry] = []

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, site: SiteEntry) -> None:
        i = bisect_left(self.keys, site.key)
        self.keys.insert(i, site.key)
        self.sites.insert(i, site)

    def remove(self, site: SiteEntry) -> None:
        i = bisect_left(self.keys, site.key)
        if i < len(self.keys) and self.keys[i] == site.key:
            del self.keys[i]
            del self.sites[i]


# --- the request-dependent part of the score --------------------------------------------------


def preference(weights: RankWeights, site: str, req: PlacementRequest) -> float:
    prefs = req.preferred_sites
    if not prefs or site not in prefs:
        return 0.0
    return weights.user_preference * (1.0 - prefs.index(site) / len(prefs))


def score(weights: RankWeights, entry: SiteEntry, req: PlacementRequest) -> float:
    """The site's score for ``req``: its static part plus the request's bonuses."""
    cap = entry.cap
    total = entry.static
    if req.image in cap.cached_images:
        total += weights.image_cached
    if req.data_location and matches(cap.location, req.data_location):
        total += weights.data_locality
    if req.preferred_sites:
        total += preference(weights, entry.name, req)
    return total


def components(weights: RankWeights, entry: SiteEntry, req: PlacementRequest) -> dict[str, float]:
    """Each weighted term of the score (what ``Candidate.explain`` shows)."""
    w = weights
    cap = entry.cap
    c_ref = w.capacity_reference_cpus
    m_ref = w.capacity_reference_memory_mib
    cpus, memory = entry.total_cpus, entry.total_memory
    located = bool(req.data_location) and matches(cap.location, req.data_location)
    return {
        "free_capacity": w.free_capacity
        * (0.5 * cpus / (cpus + c_ref) + 0.5 * memory / (memory + m_ref)),
        "price": w.price * w.price_reference / (w.price_reference + cap.price_per_hour),
        "image_cached": w.image_cached if req.image in cap.cached_images else 0.0,
        "data_locality": w.data_locality if located else 0.0,
        "user_preference": preference(w, entry.name, req),
    }
