"""Placement across sites: filter by requirements and constraints, rank the rest.

How a request is placed
-----------------------

**Filters** (a site failing any of them is *rejected* with a
:class:`~federation.model.Rejection`):

=================  ==========================================================
code               the site is rejected when
=================  ==========================================================
unknown_site       the user named it but it never reported capacity
unavailable        it reported ``available=False`` (maintenance, draining)
stale              its last heartbeat is older than ``heartbeat_timeout``
location           one of the request's ``location`` tags is missing or differs
vo_not_allowed     it restricts VOs and none of the user's VO/groups is allowed
network            it has no free address of the requested network type
image              the image is neither cached nor fetchable there
capacity           no *single* host has the vCPUs and the RAM free at once
=================  ==========================================================

``site in [...]`` (``request.sites``) limits the scope to the named sites.

**Rank**: the sites left are scored, higher is better::

    score = free_capacity   * (0.5 * C / (C + C_ref) + 0.5 * M / (M + M_ref))
          + price           * P_ref / (P_ref + price_per_hour)
          + image_cached    * [image in the site's cache]
          + data_locality   * [the site carries every tag of request.data_location]
          + user_preference * (1 - i / len(preferred_sites))   for the i-th preferred site

``C`` and ``M`` are the site's total free vCPUs and MiB; ``C_ref``, ``M_ref``
and ``P_ref`` are the reference values in :class:`RankWeights` (each term is
in [0, 1] before weighting, and a site with ``C = C_ref`` free vCPUs gets
half the CPU part).  Ties are broken by site name, so decisions are
deterministic.

Speed
-----

The placer keeps per-site aggregates, computed once per capacity report
(:meth:`Placer.update`) instead of per decision:

* a *skyline* of the site's hosts (the hosts not dominated in both free CPUs
  and free RAM), sorted by CPUs ascending with RAM descending, so "does one
  host have ``c`` CPUs and ``m`` MiB free at once" is a single ``bisect``;
* the request-independent part of the score (free capacity and price),
  with sites kept sorted by it in one index, plus one such index per cached
  image and per location tag.

A decision walks the indexes best-first (a threshold algorithm: the
request-dependent bonuses are bounded by their weights) and stops as soon as no
unexamined site can beat the current ``max_candidates``-th candidate.  When
most sites fit, a decision examines a few dozen sites whatever the size of the
federation; when almost none fit it degenerates to one pass over the sites in
scope (which is also what building a complete 409 answer needs).
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from federation.errors import PlacementError
from federation.model import (
    Candidate,
    PlacementDecision,
    PlacementRequest,
    RejectCode,
    Rejection,
    SiteCapacity,
)

_END: tuple[float, str] = (math.inf, "")  # the key past the end of an index


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


class _Site:
    """Per-site aggregates computed once per capacity report."""

    __slots__ = (
        "cap",
        "host_list",
        "key",
        "max_cpus",
        "max_memory",
        "name",
        "sky_cpus",
        "sky_memory",
        "static",
        "total_cpus",
        "total_memory",
    )

    def __init__(self, cap: SiteCapacity, weights: RankWeights) -> None:
        self.cap = cap
        self.name = cap.site
        self.host_list = [[h.free_cpus, h.free_memory_mib] for h in cap.hosts]
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
        """Rebuild the skyline and the static score from ``host_list``."""
        cpus_desc: list[int] = []
        memory_asc: list[int] = []
        best_memory = -1
        total_cpus = 0
        total_memory = 0
        for cpus, memory in sorted(self.host_list, key=lambda h: (-h[0], -h[1])):
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

    def fitting_host(self, vcpus: int, memory_mib: int) -> list[int] | None:
        """The tightest host (fewest CPUs, then least RAM) with enough free CPUs and RAM."""
        best: list[int] | None = None
        for host in self.host_list:
            if host[0] >= vcpus and host[1] >= memory_mib and (best is None or host < best):
                best = host
        return best


class _Index:
    """Sites sorted by static score (best first), ties by name."""

    __slots__ = ("keys", "sites")

    def __init__(self) -> None:
        self.keys: list[tuple[float, str]] = []
        self.sites: list[_Site] = []

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, site: _Site) -> None:
        i = bisect_left(self.keys, site.key)
        self.keys.insert(i, site.key)
        self.sites.insert(i, site)

    def remove(self, site: _Site) -> None:
        i = bisect_left(self.keys, site.key)
        if i < len(self.keys) and self.keys[i] == site.key:
            del self.keys[i]
            del self.sites[i]


def _matches(tags: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(tags.get(k) == v for k, v in wanted.items())


class Placer:
    """Chooses sites for requests from the latest capacity report of each site.

    Feed it with :meth:`update` on every heartbeat (and :meth:`remove` when a
    site leaves); ask it with :meth:`decide` (never raises for "no site") or
    :meth:`place` (raises :class:`PlacementError`).  :meth:`reserve` lowers a
    site's free capacity right after a VM was sent there, so that the next
    decisions do not pile onto it before its next heartbeat.

    ``max_candidates`` bounds how many ranked sites a decision returns (the
    failover loop tries them in order).  ``heartbeat_timeout`` (seconds,
    None = never) rejects sites whose report is older; ``clock`` returns the
    current time in seconds since the epoch.

    Not thread-safe: use it from one event loop (decisions take microseconds).
    """

    def __init__(
        self,
        weights: RankWeights | None = None,
        *,
        max_candidates: int = 5,
        heartbeat_timeout: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_candidates < 1:
            raise ValueError("max_candidates must be >= 1")
        self.weights = weights or RankWeights()
        self.max_candidates = max_candidates
        self.heartbeat_timeout = heartbeat_timeout
        self.clock = clock
        self._sites: dict[str, _Site] = {}
        self._all = _Index()
        self._by_image: dict[str, _Index] = {}
        self._by_tag: dict[tuple[str, str], _Index] = {}

    # -- capacity reports -------------------------------------------------

    def __len__(self) -> int:
        return len(self._sites)

    def __contains__(self, site: object) -> bool:
        return site in self._sites

    @property
    def site_names(self) -> list[str]:
        return sorted(self._sites)

    def capacity(self, site: str) -> SiteCapacity | None:
        """The last report of ``site`` (as given to :meth:`update`), or None."""
        entry = self._sites.get(site)
        return entry.cap if entry is not None else None

    def update(self, capacity: SiteCapacity) -> None:
        """Take a site's new capacity report; replaces the previous one."""
        self.remove(capacity.site)
        entry = _Site(capacity, self.weights)
        self._sites[entry.name] = entry
        self._index(entry)

    def update_many(self, capacities: Iterable[SiteCapacity]) -> None:
        for cap in capacities:
            self.update(cap)

    def remove(self, site: str) -> None:
        """Forget ``site`` (it left the federation). Unknown names are ignored."""
        entry = self._sites.pop(site, None)
        if entry is not None:
            self._unindex(entry)

    def reserve(self, site: str, vcpus: int, memory_mib: int) -> bool:
        """Take ``vcpus``/``memory_mib`` from the tightest fitting host of ``site``.

        Returns False (and changes nothing) if the site is unknown or no host
        fits.  The next :meth:`update` for the site replaces the estimate.
        """
        entry = self._sites.get(site)
        if entry is None:
            return False
        host = entry.fitting_host(vcpus, memory_mib)
        if host is None:
            return False
        self._unindex(entry)
        host[0] -= vcpus
        host[1] -= memory_mib
        entry.recompute(self.weights)
        self._index(entry)
        return True

    def _index(self, entry: _Site) -> None:
        if not entry.cap.available:
            return
        self._all.add(entry)
        for image in entry.cap.cached_images:
            self._by_image.setdefault(image, _Index()).add(entry)
        for pair in entry.cap.location.items():
            self._by_tag.setdefault(pair, _Index()).add(entry)

    def _unindex(self, entry: _Site) -> None:
        if not entry.cap.available:
            return
        self._all.remove(entry)
        for image in entry.cap.cached_images:
            idx = self._by_image.get(image)
            if idx is not None:
                idx.remove(entry)
                if not idx:
                    del self._by_image[image]
        for pair in entry.cap.location.items():
            idx = self._by_tag.get(pair)
            if idx is not None:
                idx.remove(entry)
                if not idx:
                    del self._by_tag[pair]

    # -- filters and score --------------------------------------------------

    def _passes(self, entry: _Site, req: PlacementRequest, now: float) -> bool:
        """True if ``entry`` passes every filter (the hot path; :meth:`_check` says why not)."""
        cap = entry.cap
        if not cap.available:
            return False
        timeout = self.heartbeat_timeout
        if (
            timeout is not None
            and cap.last_heartbeat is not None
            and now - cap.last_heartbeat > timeout
        ):
            return False
        if req.location:
            tags = cap.location
            for key, value in req.location.items():
                if tags.get(key) != value:
                    return False
        allowed = cap.allowed_vos
        if allowed is not None and allowed.isdisjoint(req.vos):
            return False
        network = req.network
        if network is not None and cap.free_addresses.get(network, 0) <= 0:
            return False
        image = req.image
        if image not in cap.cached_images:
            fetchable = cap.fetchable_images
            if fetchable is not None and image not in fetchable:
                return False
        sky_cpus = entry.sky_cpus
        i = bisect_left(sky_cpus, req.vcpus)
        return i < len(sky_cpus) and entry.sky_memory[i] >= req.memory_mib

    def _check(
        self, entry: _Site, req: PlacementRequest, now: float, *, all_reasons: bool = False
    ) -> Rejection | None:
        """Why ``entry`` cannot take ``req`` (None if it can).

        With ``all_reasons`` every failing filter is named in the message (the
        code is the first one's); otherwise the first failure is returned.
        """
        cap = entry.cap
        found: list[Rejection] = []

        def reject(code: RejectCode, message: str) -> bool:
            found.append(Rejection(code, message))
            return not all_reasons

        if not cap.available and reject(RejectCode.UNAVAILABLE, "site is unavailable"):
            return found[0]
        timeout = self.heartbeat_timeout
        if (
            timeout is not None
            and cap.last_heartbeat is not None
            and now - cap.last_heartbeat > timeout
            and reject(
                RejectCode.STALE,
                f"no heartbeat for {now - cap.last_heartbeat:.0f}s (limit {timeout:.0f}s)",
            )
        ):
            return found[0]
        if req.location and not _matches(cap.location, req.location):
            for key, value in req.location.items():
                have = cap.location.get(key)
                if have != value:
                    message = (
                        f"location {key}={have} does not match constraint {key} == {value}"
                        if have is not None
                        else f"site has no {key} tag (constraint {key} == {value})"
                    )
                    if reject(RejectCode.LOCATION, message):
                        return found[0]
                    break
        allowed = cap.allowed_vos
        if allowed is not None and allowed.isdisjoint(req.vos):
            who = ", ".join(sorted(req.vos)) or "no VO"
            if reject(RejectCode.VO_NOT_ALLOWED, f"VO not allowed at site ({who})"):
                return found[0]
        network = req.network
        if (
            network is not None
            and cap.free_addresses.get(network, 0) <= 0
            and reject(RejectCode.NETWORK, f"no free {network} address")
        ):
            return found[0]
        if not cap.can_get_image(req.image) and reject(
            RejectCode.IMAGE, f"image {req.image} neither cached nor fetchable"
        ):
            return found[0]
        if not entry.fits(req.vcpus, req.memory_mib):
            if not entry.sky_cpus:
                message = "site reports no hypervisor host"
            else:
                message = (
                    f"no host with {req.vcpus} free CPUs and {req.memory_mib} MiB free RAM "
                    f"(most free CPUs on a host: {entry.max_cpus}, "
                    f"most free RAM on a host: {entry.max_memory} MiB)"
                )
            if reject(RejectCode.CAPACITY, message):
                return found[0]
        if not found:
            return None
        if len(found) == 1:
            return found[0]
        return Rejection(found[0].code, "; ".join(r.message for r in found))

    def _components(self, entry: _Site, req: PlacementRequest) -> dict[str, float]:
        w = self.weights
        cap = entry.cap
        c_ref = w.capacity_reference_cpus
        m_ref = w.capacity_reference_memory_mib
        total_cpus = entry.total_cpus
        total_memory = entry.total_memory
        parts = {
            "free_capacity": w.free_capacity
            * (
                0.5 * total_cpus / (total_cpus + c_ref)
                + 0.5 * total_memory / (total_memory + m_ref)
            ),
            "price": w.price * w.price_reference / (w.price_reference + cap.price_per_hour),
            "image_cached": w.image_cached if req.image in cap.cached_images else 0.0,
            "data_locality": (
                w.data_locality
                if req.data_location and _matches(cap.location, req.data_location)
                else 0.0
            ),
            "user_preference": self._preference(entry.name, req),
        }
        return parts

    def _preference(self, site: str, req: PlacementRequest) -> float:
        prefs = req.preferred_sites
        if not prefs or site not in prefs:
            return 0.0
        return self.weights.user_preference * (1.0 - prefs.index(site) / len(prefs))

    def _score(self, entry: _Site, req: PlacementRequest) -> float:
        w = self.weights
        cap = entry.cap
        score = entry.static
        if req.image in cap.cached_images:
            score += w.image_cached
        if req.data_location and _matches(cap.location, req.data_location):
            score += w.data_locality
        if req.preferred_sites:
            score += self._preference(entry.name, req)
        return score

    # -- decisions ------------------------------------------------------------

    def explain(self, request: PlacementRequest) -> dict[str, Rejection]:
        """Every site in the request's scope that cannot take it, with all its failing filters.

        One pass over the sites: used to build a complete 409 answer.
        """
        now = self.clock()
        out: dict[str, Rejection] = {}
        if request.sites is not None:
            names: Iterable[str] = request.sites
        else:
            names = sorted(self._sites)
        for name in names:
            entry = self._sites.get(name)
            if entry is None:
                out[name] = Rejection(RejectCode.UNKNOWN_SITE, "unknown site")
                continue
            rejection = self._check(entry, request, now, all_reasons=True)
            if rejection is not None:
                out[name] = rejection
        return out

    def decide(self, request: PlacementRequest) -> PlacementDecision:
        """Rank the sites that can take ``request``; never raises for "no site".

        An empty ``candidates`` means no site passed the filters, and then
        ``rejected`` holds every site in scope with all its failing filters.
        """
        now = self.clock()
        k = self.max_candidates
        best: list[tuple[float, str]] = []  # (-score, name), best first, at most k
        rejected: dict[str, Rejection] = {}
        passes = self._passes
        check = self._check
        score_of = self._score

        def consider(entry: _Site) -> None:
            if not passes(entry, request, now):
                rejection = check(entry, request, now)
                if rejection is not None:  # always, unless the clock moved
                    rejected[entry.name] = rejection
                    return
            item = (-score_of(entry, request), entry.name)
            if len(best) < k:
                insort(best, item)
            elif item < best[-1]:
                insort(best, item)
                best.pop()

        complete = True
        if request.sites is not None:
            for name in request.sites:
                entry = self._sites.get(name)
                if entry is None:
                    rejected[name] = Rejection(RejectCode.UNKNOWN_SITE, "unknown site")
                else:
                    consider(entry)
        else:
            complete = self._walk(request, consider, best, k)

        if not best:
            return PlacementDecision(request, (), self.explain(request), complete=True)
        candidates = []
        for rank, (neg_score, name) in enumerate(best, start=1):
            entry = self._sites[name]
            candidates.append(
                Candidate(
                    site=name,
                    score=-neg_score,
                    rank=rank,
                    image_cached=request.image in entry.cap.cached_images,
                    components=self._components(entry, request),
                )
            )
        return PlacementDecision(request, tuple(candidates), rejected, complete=complete)

    def _smallest_tag_index(self, tags: Mapping[str, str]) -> _Index | None:
        """The smallest per-tag index among ``tags`` (an empty one if any tag is unknown)."""
        smallest: _Index | None = None
        for pair in tags.items():
            idx = self._by_tag.get(pair)
            if idx is None:
                return _Index()
            if smallest is None or len(idx) < len(smallest):
                smallest = idx
        return smallest

    def _walk(
        self,
        request: PlacementRequest,
        consider: Callable[[_Site], None],
        best: list[tuple[float, str]],
        k: int,
    ) -> bool:
        """Examine sites best-first until no unexamined site can enter ``best``.

        Returns True if every site in scope was examined.
        """
        w = self.weights
        universe = self._smallest_tag_index(request.location) if request.location else self._all
        assert universe is not None
        seen: set[str] = set()
        for name in request.preferred_sites:
            entry = self._sites.get(name)
            if entry is not None:
                seen.add(name)
                consider(entry)

        # Lists walked in parallel: the universe (no bonus) and the bonus lists.
        lists: list[_Index] = [universe]
        bonuses: list[float] = [0.0]
        if w.image_cached > 0:
            idx = self._by_image.get(request.image)
            if idx:
                lists.append(idx)
                bonuses.append(w.image_cached)
        if w.data_locality > 0 and request.data_location:
            idx = self._smallest_tag_index(request.data_location)
            if idx:
                lists.append(idx)
                bonuses.append(w.data_locality)
        n = len(lists)
        cursors = [0] * n
        # Every subset of bonus lists an unseen site could belong to (the universe always).
        subsets = [
            (0, *[j for j in range(1, n) if mask & (1 << (j - 1))]) for mask in range(1 << (n - 1))
        ]
        # heads[j]: key (-static, name) of the next site in list j; _END once exhausted.
        heads = [lst.keys[0] if lst.keys else _END for lst in lists]
        while True:
            if heads[0] is _END:
                return True  # every site in scope has been examined
            # The best key an unseen site can have: for each subset S, such a site is at
            # or after the head of every list in S, so its key is at least the largest
            # head key in S, with the bonuses of S added (in the order _score adds them).
            bound: tuple[float, str] = _END
            advance = 0
            for members in subsets:
                worst = max(members, key=heads.__getitem__)
                head = heads[worst]
                if head is _END:
                    continue
                value = -head[0]
                for j in members[1:]:
                    value += bonuses[j]
                key = (-value, head[1])
                if key < bound:
                    bound = key
                    advance = worst
            if len(best) >= k and best[-1] < bound:
                return False
            lst = lists[advance]
            cursor = cursors[advance]
            entry = lst.sites[cursor]
            cursor += 1
            cursors[advance] = cursor
            heads[advance] = lst.keys[cursor] if cursor < len(lst.keys) else _END
            if entry.name not in seen:
                seen.add(entry.name)
                consider(entry)

    def place(self, request: PlacementRequest) -> PlacementDecision:
        """Like :meth:`decide`, but raises :class:`PlacementError` (-> 409) when no site fits.

        The error's ``rejected`` maps every site in scope to all its reasons.
        """
        decision = self.decide(request)
        if not decision.found:
            raise placement_error(decision)
        return decision


def placement_error(decision: PlacementDecision) -> PlacementError:
    """The 409 error for a decision without candidates, naming each site's reasons."""
    reasons = decision.reasons()
    if not reasons:
        message = "no site can place the request: the federation has no site"
    else:
        shown = "; ".join(f"{site}: {reason}" for site, reason in list(reasons.items())[:5])
        more = f" (and {len(reasons) - 5} more sites)" if len(reasons) > 5 else ""
        message = f"no site can place the request: {shown}{more}"
    return PlacementError(message, rejected=reasons, codes=decision.codes())
