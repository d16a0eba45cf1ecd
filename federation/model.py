"""Typed value objects of placement: what sites offer, what a request needs, what was decided.

* :class:`SiteCapacity` is what a site reports in its heartbeat: the free CPUs
  and RAM of each of its hypervisor hosts, its image cache, free addresses per
  network type, which VOs may use it, its location tags and its price.
* :class:`PlacementRequest` is what one VM needs, with the user's constraints
  (``site in [...]``, location tags that must match) and preferences
  (preferred sites, where the data lives).
* :class:`PlacementDecision` is the :class:`~federation.placement.Placer`'s
  answer: candidates best first, and why other sites were rejected.
* :class:`PublicCloudConfig` describes a public cloud used for bursting.

All objects are immutable; collections given as lists or dicts are copied into
tuples, frozensets and plain dicts on construction, so a caller mutating its
own list afterwards changes nothing here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class NetworkType(StrEnum):
    """The three address pools of a Stratus site."""

    PUBLIC = "public"
    LOCAL = "local"
    PRIVATE = "private"


class RejectCode(StrEnum):
    """Why a site was filtered out; the machine-readable half of a :class:`Rejection`."""

    UNKNOWN_SITE = "unknown_site"  # named in a constraint but never reported capacity
    UNAVAILABLE = "unavailable"  # the site said it is unavailable (maintenance, draining)
    STALE = "stale"  # no heartbeat within the placer's heartbeat timeout
    NOT_IN_CONSTRAINT = "not_in_constraint"  # excluded by ``site in [...]``
    VO_NOT_ALLOWED = "vo_not_allowed"  # none of the user's VOs/groups may use the site
    LOCATION = "location"  # a ``tag == value`` constraint does not match the site's tags
    NETWORK = "network"  # no free address of the requested network type
    IMAGE = "image"  # image neither cached nor fetchable
    CAPACITY = "capacity"  # no single host has enough free CPUs and RAM at once


@dataclass(frozen=True)
class Rejection:
    """Why one site cannot take a request: a stable ``code`` and a sentence for humans."""

    code: RejectCode
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class HostCapacity:
    """Free resources of one hypervisor host of a site."""

    free_cpus: int
    free_memory_mib: int

    def __post_init__(self) -> None:
        if self.free_cpus < 0 or self.free_memory_mib < 0:
            raise ValueError("free_cpus and free_memory_mib must be >= 0")


def _frozen_strs(value: Iterable[str] | None) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


@dataclass(frozen=True, eq=False)
class SiteCapacity:
    """A site's capacity report (its heartbeat), as the placer consumes it.

    ``hosts``: free CPUs and RAM of every hypervisor host.  A VM fits a site
    only if one host has both enough CPUs and enough RAM free; the sum over
    hosts does not matter.
    ``cached_images``: images already in the site's cache (boots fastest).
    ``fetchable_images``: images the site may fetch on demand (allowed by its
    Marketplace policy); ``None`` means the site can fetch any image.
    ``free_addresses``: free leases per network type; a missing type is 0.
    ``allowed_vos``: VOs (or groups) allowed to use the site; ``None`` = all.
    ``location``: tags such as ``{"country": "FR", "city": "Orsay"}``.
    ``price_per_hour``: price of one vCPU-hour at the site in the federation's
    currency unit (0 for sites that do not charge).
    ``available``: False when the site is in maintenance or draining.
    ``last_heartbeat``: when the report was made (seconds since the epoch);
    ``None`` means "now" for placers that check staleness.
    """

    site: str
    hosts: Sequence[HostCapacity] = ()
    cached_images: frozenset[str] = frozenset()
    fetchable_images: frozenset[str] | None = frozenset()
    free_addresses: Mapping[NetworkType, int] = field(default_factory=dict)
    allowed_vos: frozenset[str] | None = None
    location: Mapping[str, str] = field(default_factory=dict)
    price_per_hour: float = 0.0
    available: bool = True
    last_heartbeat: float | None = None

    def __post_init__(self) -> None:
        if not self.site:
            raise ValueError("site name must not be empty")
        if self.price_per_hour < 0:
            raise ValueError("price_per_hour must be >= 0")
        set_ = object.__setattr__
        set_(self, "hosts", tuple(self.hosts))
        set_(self, "cached_images", frozenset(self.cached_images))
        set_(self, "fetchable_images", _frozen_strs(self.fetchable_images))
        set_(self, "allowed_vos", _frozen_strs(self.allowed_vos))
        set_(self, "location", dict(self.location))
        set_(
            self, "free_addresses", {NetworkType(k): int(v) for k, v in self.free_addresses.items()}
        )

    def can_get_image(self, image: str) -> bool:
        """True if ``image`` is cached here or may be fetched."""
        fetchable = self.fetchable_images
        return image in self.cached_images or fetchable is None or image in fetchable


@dataclass(frozen=True, eq=False)
class PlacementRequest:
    """What one VM needs, and what the user asked for.

    Requirements (filters): ``vcpus`` and ``memory_mib`` on one host,
    ``image`` cached or fetchable, a free address on ``network`` (``None``:
    no address needed), the user's ``vo``/``groups`` allowed at the site.

    Constraints (filters the user sets): ``sites`` — only these sites
    (``site in [...]``, or one site when the user names it); ``location`` —
    tags the site must carry with exactly these values (data that must not
    leave a country: ``{"country": "FR"}``).

    Preferences (ranking only): ``preferred_sites`` best first;
    ``data_location`` — tags of where the user's data lives, sites matching all
    of them rank higher.

    Bursting and queueing inputs: ``user``, ``instance_type``,
    ``confidential`` (never leaves the federation), ``allow_burst`` (the user
    may opt out), ``wait`` (queue rather than burst), ``expected_hours`` (for
    the burst budget estimate).
    """

    vcpus: int
    memory_mib: int
    image: str
    network: NetworkType | None = None
    vo: str | None = None
    groups: frozenset[str] = frozenset()
    sites: tuple[str, ...] | None = None
    location: Mapping[str, str] = field(default_factory=dict)
    preferred_sites: tuple[str, ...] = ()
    data_location: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None
    instance_type: str | None = None
    confidential: bool = False
    allow_burst: bool = True
    wait: bool = False
    expected_hours: float | None = None

    def __post_init__(self) -> None:
        if self.vcpus < 1:
            raise ValueError("vcpus must be >= 1")
        if self.memory_mib < 1:
            raise ValueError("memory_mib must be >= 1")
        if not self.image:
            raise ValueError("image must not be empty")
        if self.expected_hours is not None and self.expected_hours <= 0:
            raise ValueError("expected_hours must be > 0")
        set_ = object.__setattr__
        if self.network is not None:
            set_(self, "network", NetworkType(self.network))
        set_(self, "groups", frozenset(self.groups))
        if self.sites is not None:
            sites = tuple(dict.fromkeys(self.sites))
            if not sites:
                raise ValueError("sites, when given, must name at least one site")
            set_(self, "sites", sites)
        set_(self, "location", dict(self.location))
        set_(self, "preferred_sites", tuple(dict.fromkeys(self.preferred_sites)))
        set_(self, "data_location", dict(self.data_location))

    @property
    def pinned(self) -> bool:
        """True when the user restricted the request to named sites."""
        return self.sites is not None

    @property
    def vos(self) -> frozenset[str]:
        """The user's VO and groups together: what a site's ``allowed_vos`` is matched against."""
        return self.groups | {self.vo} if self.vo else self.groups


@dataclass(frozen=True)
class Candidate:
    """A site that passed every filter, with its rank (1 = best) and score.

    ``components`` holds each weighted ranking term (``free_capacity``,
    ``price``, ``image_cached``, ``data_locality``, ``user_preference``) so the
    choice can be explained in the VM's events.
    """

    site: str
    score: float
    rank: int
    image_cached: bool
    components: Mapping[str, float] = field(default_factory=dict, compare=False)

    def explain(self) -> str:
        parts = ", ".join(f"{k}={v:.3f}" for k, v in self.components.items() if v)
        return f"rank {self.rank} score {self.score:.3f}" + (f" ({parts})" if parts else "")


@dataclass(frozen=True, eq=False)
class PlacementDecision:
    """The placer's answer for one request.

    ``candidates`` are best first (at most the placer's ``max_candidates``).
    ``rejected`` maps sites to why they were filtered out.  When
    ``complete`` is True every site in scope was examined (always the case
    when there is no candidate); otherwise the placer stopped as soon as it
    could prove no unexamined site would rank among the candidates, and
    ``rejected`` holds only the sites it looked at.
    """

    request: PlacementRequest
    candidates: tuple[Candidate, ...]
    rejected: Mapping[str, Rejection]
    complete: bool

    @property
    def found(self) -> bool:
        return bool(self.candidates)

    def reasons(self) -> dict[str, str]:
        """``{site: reason}`` for the rejected sites (what a 409 reports)."""
        return {site: r.message for site, r in self.rejected.items()}

    def codes(self) -> dict[str, str]:
        """``{site: reject code}`` for the rejected sites."""
        return {site: str(r.code) for site, r in self.rejected.items()}


@dataclass(frozen=True)
class CloudSize:
    """A public-cloud size that serves one Stratus instance type.

    ``size_id`` is the provider's size (EC2 instance type, e.g. ``t3.small``);
    ``price_per_hour`` what one VM of this size costs per hour, in the same
    currency unit as the burst budget.
    """

    size_id: str
    vcpus: int
    memory_mib: int
    price_per_hour: float


@dataclass(frozen=True, eq=False)
class PublicCloudConfig:
    """One public cloud reached through a libcloud driver.

    ``driver`` is a libcloud compute provider name (``"ec2"``); ``key`` and
    ``secret`` its credentials (the secret is never shown in ``repr``);
    ``region``, ``host``, ``port`` and ``secure`` where to reach it (host and
    port override the region's endpoint, which is how tests point the EC2
    driver at ``moto_server`` on loopback).  ``images`` maps Stratus image
    names to the cloud's image ids (AMIs); ``sizes`` maps Stratus instance
    types to :class:`CloudSize`.
    """

    name: str
    driver: str = "ec2"
    key: str = ""
    secret: str = field(default="", repr=False)
    region: str = "us-east-1"
    host: str | None = None
    port: int | None = None
    secure: bool = True
    images: Mapping[str, str] = field(default_factory=dict)
    sizes: Mapping[str, CloudSize] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("cloud name must not be empty")
        object.__setattr__(self, "images", dict(self.images))
        object.__setattr__(self, "sizes", dict(self.sizes))
        object.__setattr__(self, "extra", dict(self.extra))

    def size_for(
        self, instance_type: str | None, vcpus: int, memory_mib: int
    ) -> tuple[str, CloudSize] | None:
        """The ``(instance type, size)`` serving a request, or None.

        A named instance type must be mapped; otherwise the cheapest mapped
        size with at least ``vcpus`` and ``memory_mib`` is chosen (ties by name).
        """
        if instance_type is not None:
            size = self.sizes.get(instance_type)
            return (instance_type, size) if size is not None else None
        fitting = [
            (s.price_per_hour, name, s)
            for name, s in self.sizes.items()
            if s.vcpus >= vcpus and s.memory_mib >= memory_mib
        ]
        if not fitting:
            return None
        _, name, size = min(fitting, key=lambda t: (t[0], t[1]))
        return name, size
