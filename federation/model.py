"""Typed value objects of placement: what sites offer, what a request needs, what was decided.

* :class:`SiteCapacity` is what a site reports in its heartbeat: the free CPUs
  and RAM (and the tags) of each of its hypervisor hosts, its image cache, its
  address pools and free addresses per network type, which VOs may use it,
  its location tags and its price (built from the heartbeat by
  :func:`federation.capacity.capacity_from_report`).
* :class:`PlacementRequest` is what one VM needs (size, image, static disks,
  a named pool or a pool type, an address, host tags), with the user's
  constraints (``site in [...]``, location tags that must match) and
  preferences (preferred sites, where the data lives).
* :class:`PlacementDecision` is the :class:`~federation.placement.Placer`'s
  answer: candidates best first, and why other sites were rejected.
* :class:`PublicCloudConfig` describes a public cloud used for bursting.

All objects are immutable; collections given as lists or dicts are copied into
tuples, frozensets and plain dicts on construction, so a caller mutating its
own list afterwards changes nothing here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from core.resources.networks import POOL_NAME_PATTERN, NetworkType

_POOL_NAME = re.compile(POOL_NAME_PATTERN)


class RejectCode(StrEnum):
    """Why a site was filtered out; the machine-readable half of a :class:`Rejection`."""

    UNKNOWN_SITE = "unknown_site"  # named in a constraint but never reported capacity
    UNAVAILABLE = "unavailable"  # the site said it is unavailable (maintenance, draining)
    STALE = "stale"  # no heartbeat within the placer's heartbeat timeout
    NOT_IN_CONSTRAINT = "not_in_constraint"  # excluded by ``site in [...]``
    VO_NOT_ALLOWED = "vo_not_allowed"  # none of the user's VOs/groups may use the site
    LOCATION = "location"  # a ``tag == value`` constraint does not match the site's tags
    NETWORK = "network"  # no free address of the requested network type
    NO_POOL = "no_pool"  # no pool of the requested name (or it is of another type)
    NO_FREE_ADDRESS = "no_free_address"  # the named pool has no free address
    ADDRESS = "address"  # the requested address is not in the pool's CIDR
    IMAGE = "image"  # image neither cached nor fetchable
    STATIC_IMAGE = "static_image"  # an image asked for as a static disk is not available
    HOST_TAGS = "host_tags"  # no host carries every requested tag
    CAPACITY = "capacity"  # no single host (with the tags) has enough free CPUs and RAM


@dataclass(frozen=True)
class Rejection:
    """Why one site cannot take a request: a stable ``code`` and a sentence for humans."""

    code: RejectCode
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class HostCapacity:
    """Free resources of one hypervisor host of a site, and its tags (``ssd``, ``gpu``...)."""

    free_cpus: int
    free_memory_mib: int
    tags: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.free_cpus < 0 or self.free_memory_mib < 0:
            raise ValueError("free_cpus and free_memory_mib must be >= 0")
        object.__setattr__(self, "tags", frozenset(self.tags))


@dataclass(frozen=True, slots=True)
class PoolCapacity:
    """One address pool of a site: its type, range and free addresses.

    ``default`` marks the pool a VM gets when it names none; ``cidr`` may be
    given as a string.
    """

    type: NetworkType
    cidr: IPv4Network
    free: int
    default: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", NetworkType(self.type))
        object.__setattr__(self, "cidr", IPv4Network(self.cidr))
        if self.free < 0:
            raise ValueError("free must be >= 0")


def _frozen_strs(value: Iterable[str] | None) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


@dataclass(frozen=True, eq=False)
class SiteCapacity:
    """A site's capacity report (its heartbeat), as the placer consumes it.

    ``hosts``: free CPUs, RAM and tags of every hypervisor host.  A VM fits a
    site only if one host has both enough CPUs and enough RAM free (and every
    tag the VM asks for); the sum over hosts does not matter.
    ``cached_images``: images already in the site's cache (boots fastest).
    ``fetchable_images``: images the site may fetch on demand (allowed by its
    Marketplace policy); ``None`` means the site can fetch any image.
    ``pools``: the site's address pools by name (the order is the site's:
    the first pool of a type is the one chosen for a request of that type
    when no pool of it is the default).
    ``free_addresses``: free leases per network type; a missing type is 0.
    Left empty, it is the sum over ``pools``.
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
    pools: Mapping[str, PoolCapacity] = field(default_factory=dict)
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
        set_(self, "pools", dict(self.pools))
        free = {NetworkType(k): int(v) for k, v in self.free_addresses.items()}
        if not free:
            for pool in self.pools.values():
                free[pool.type] = free.get(pool.type, 0) + pool.free
        set_(self, "free_addresses", free)

    @property
    def default_pool(self) -> str | None:
        """The pool a VM gets when it names none: the default one, else the first."""
        for name, pool in self.pools.items():
            if pool.default:
                return name
        return next(iter(self.pools), None)

    def can_get_image(self, image: str) -> bool:
        """True if ``image`` is cached here or may be fetched."""
        fetchable = self.fetchable_images
        return image in self.cached_images or fetchable is None or image in fetchable


@dataclass(frozen=True, eq=False)
class PlacementRequest:
    """What one VM needs, and what the user asked for.

    Requirements (filters): ``vcpus`` and ``memory_mib`` on one host that
    carries every tag of ``host_tags``; ``image`` and every image of
    ``static_images`` cached or fetchable, or among the user's own images at
    the site (``own_images``: site -> the images only this user can use there,
    as the site listed them for the user; heartbeats carry public images
    only); an address: ``network`` names the
    pool (the site must have it, with a free address), ``network_type`` asks
    for any pool of that type with a free address, ``address`` must lie in
    the pool's CIDR (the named pool, a pool of the type, or else the site's
    default pool; whether that one address is free only the site knows);
    none of the three: no address needed. The user's ``vo``/``groups`` must
    be allowed at the site.

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
    network: str | None = None
    network_type: NetworkType | None = None
    address: str | None = None
    host_tags: frozenset[str] = frozenset()
    static_images: frozenset[str] = frozenset()
    own_images: Mapping[str, frozenset[str]] = field(default_factory=dict)
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
    #: True when the request needs an address (network, network_type or address given).
    needs_address: bool = field(default=False, init=False, repr=False)
    #: ``network_type`` when it is the only address requirement (the common case, made fast).
    type_only: NetworkType | None = field(default=None, init=False, repr=False)
    #: ``address`` parsed once.
    address_ip: IPv4Address | None = field(default=None, init=False, repr=False)

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
        if self.network is not None and not _POOL_NAME.match(self.network):
            raise ValueError(f"network {self.network!r} is not a pool name")
        if self.network_type is not None:
            set_(self, "network_type", NetworkType(self.network_type))
        if self.address is not None:
            try:
                set_(self, "address_ip", IPv4Address(self.address))
            except ValueError as exc:
                raise ValueError(f"address {self.address!r} is not an IPv4 address") from exc
            set_(self, "address", str(self.address_ip))
        set_(self, "needs_address", bool(self.network or self.network_type or self.address))
        if self.network is None and self.address is None:
            set_(self, "type_only", self.network_type)
        set_(self, "host_tags", frozenset(self.host_tags))
        set_(self, "static_images", frozenset(self.static_images))
        set_(self, "own_images", {k: frozenset(v) for k, v in self.own_images.items()})
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
    choice can be explained in the VM's events. ``network`` is the pool the
    site must receive in the create (the named one; for a ``network_type``
    request the site's default, else first, pool of that type with a free
    address; for an ``address`` alone the site's default pool), None when
    the request needs no address or the site reports no pools.
    """

    site: str
    score: float
    rank: int
    image_cached: bool
    components: Mapping[str, float] = field(default_factory=dict, compare=False)
    network: str | None = None

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
