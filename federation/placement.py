"""Placement across sites: filter by requirements and constraints, rank the rest.

How a request is placed
-----------------------

**Filters**: a site failing any of them is *rejected* with a
:class:`~federation.model.Rejection` whose code says which (``capacity``,
``image``, ``no_pool``, ``host_tags``...); the table of codes is in
:mod:`federation.placement_filters`, which holds the filters. A candidate
carries the pool the site must receive (``Candidate.network``).

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
(:meth:`Placer.update`) instead of per decision
(:class:`~federation.placement_index.SiteEntry`: a skyline of the hosts, the
tagged hosts apart, free addresses per pool, the request-independent part of
the score), with sites kept sorted by that score in one index, plus one such
index per cached image and per location tag.

A decision walks the indexes best-first (a threshold algorithm: the
request-dependent bonuses are bounded by their weights) and stops as soon as no
unexamined site can beat the current ``max_candidates``-th candidate.  When
most sites fit, a decision examines a few dozen sites whatever the size of the
federation; when almost none fit it degenerates to one pass over the sites in
scope (which is also what building a complete 409 answer needs).
"""

from __future__ import annotations

import time
from bisect import insort
from collections.abc import Callable, Iterable, Mapping

from federation.errors import PlacementError
from federation.model import (
    Candidate,
    PlacementDecision,
    PlacementRequest,
    RejectCode,
    Rejection,
    SiteCapacity,
)
from federation.placement_filters import check, choose_pool, passes
from federation.placement_index import (
    END,
    RankWeights,
    SiteEntry,
    SiteIndex,
    components,
    score,
)

__all__ = ["Placer", "RankWeights", "placement_error"]


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
        self._sites: dict[str, SiteEntry] = {}
        self._all = SiteIndex()
        self._by_image: dict[str, SiteIndex] = {}
        self._by_tag: dict[tuple[str, str], SiteIndex] = {}

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
        entry = SiteEntry(capacity, self.weights)
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

    def reserve(
        self,
        site: str,
        vcpus: int,
        memory_mib: int,
        *,
        host_tags: frozenset[str] = frozenset(),
        network: str | None = None,
    ) -> bool:
        """Take ``vcpus``/``memory_mib`` from the tightest fitting host of ``site`` (one
        carrying ``host_tags``) and, with ``network``, one free address of that pool.

        Returns False (and changes nothing) if the site is unknown or no host
        fits.  The next :meth:`update` for the site replaces the estimate.
        """
        entry = self._sites.get(site)
        if entry is None:
            return False
        host = entry.fitting_host(vcpus, memory_mib, frozenset(host_tags))
        if host is None:
            return False
        self._unindex(entry)
        entry.cpus[host] -= vcpus
        entry.memory[host] -= memory_mib
        pool = entry.cap.pools.get(network) if network is not None else None
        if pool is not None and network is not None:
            entry.pool_free[network] = max(0, entry.pool_free.get(network, 0) - 1)
            entry.type_free[pool.type] = max(0, entry.type_free.get(pool.type, 0) - 1)
        entry.recompute(self.weights)
        self._index(entry)
        return True

    def _index(self, entry: SiteEntry) -> None:
        if not entry.cap.available:
            return
        self._all.add(entry)
        for image in entry.cap.cached_images:
            self._by_image.setdefault(image, SiteIndex()).add(entry)
        for pair in entry.cap.location.items():
            self._by_tag.setdefault(pair, SiteIndex()).add(entry)

    def _unindex(self, entry: SiteEntry) -> None:
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
            rejection = check(entry, request, now, self.heartbeat_timeout, all_reasons=True)
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
        timeout = self.heartbeat_timeout
        weights = self.weights

        def consider(entry: SiteEntry) -> None:
            if not passes(entry, request, now, timeout):
                rejection = check(entry, request, now, timeout)
                if rejection is not None:  # always, unless the clock moved
                    rejected[entry.name] = rejection
                    return
            item = (-score(weights, entry, request), entry.name)
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
                    components=components(weights, entry, request),
                    network=choose_pool(entry, request)[0] if request.needs_address else None,
                )
            )
        return PlacementDecision(request, tuple(candidates), rejected, complete=complete)

    def _smallest_tag_index(self, tags: Mapping[str, str]) -> SiteIndex | None:
        """The smallest per-tag index among ``tags`` (an empty one if any tag is unknown)."""
        smallest: SiteIndex | None = None
        for pair in tags.items():
            idx = self._by_tag.get(pair)
            if idx is None:
                return SiteIndex()
            if smallest is None or len(idx) < len(smallest):
                smallest = idx
        return smallest

    def _walk(
        self,
        request: PlacementRequest,
        consider: Callable[[SiteEntry], None],
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
        lists: list[SiteIndex] = [universe]
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
        # heads[j]: key (-static, name) of the next site in list j; END once exhausted.
        heads = [lst.keys[0] if lst.keys else END for lst in lists]
        while True:
            if heads[0] is END:
                return True  # every site in scope has been examined
            # The best key an unseen site can have: for each subset S, such a site is at
            # or after the head of every list in S, so its key is at least the largest
            # head key in S, with the bonuses of S added (in the order score() adds them).
            bound: tuple[float, str] = END
            advance = 0
            for members in subsets:
                worst = max(members, key=heads.__getitem__)
                head = heads[worst]
                if head is END:
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
            heads[advance] = lst.keys[cursor] if cursor < len(lst.keys) else END
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
