"""Cloud bursting policy: when may a request go to a public cloud, and to which one.

:meth:`BurstPolicy.decide` answers with a :class:`BurstDecision` whose
``action`` is one of

* ``burst``  — create it on ``decision.cloud`` with ``decision.instance_type``;
* ``queue``  — put it in the deferred queue (the request asked to wait, or the
  policy sends requests that may not burst there: ``when_denied=queue``);
* ``reject`` — answer 409 to the user;

and a ``reason`` sentence for the VM's events.  The checks, in order:

1. a site can place the request -> reject ("bursting is only for when no site can");
2. the request asked to wait -> queue;
3. the request is ``confidential`` -> never burst (``when_denied``);
4. the request is pinned to sites (``site in [...]`` or a named site) -> never burst;
5. the request needs Stratus site resources a public cloud does not have (a
   named address pool, an address, host tags, static disks) -> never burst
   (a cloud would refuse it: 422 ``not_supported_by_cloud``);
6. the user opted out (``allow_burst=False``) -> ``when_denied``;
7. neither the user nor one of their VOs/groups is allowed to burst -> ``when_denied``;
8. no configured cloud maps the image and has a size for the request -> ``when_denied``;
9. the estimated cost (size price x ``expected_hours``, default
   ``default_hours``) does not fit in what is left of the budget for the
   current period -> ``when_denied``;
10. otherwise burst, to the cheapest cloud that can serve it (ties by name),
    with the other affordable clouds as fallbacks (``offers``).

The policy is pure: the money already spent in the period comes in as an
argument (the broker sums it from its database, or uses :class:`BurstBudget`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from federation.model import (
    Candidate,
    CloudSize,
    PlacementDecision,
    PlacementRequest,
    PublicCloudConfig,
)


def site_resources(request: PlacementRequest) -> str:
    """What of ``request`` only a Stratus site can give ("" if nothing), for the reason."""
    needs = []
    if request.network is not None:
        needs.append(f"pool {request.network}")
    if request.address is not None:
        needs.append(f"address {request.address}")
    if request.host_tags:
        needs.append("host tags " + ", ".join(sorted(request.host_tags)))
    if request.static_images:
        needs.append("static disks " + ", ".join(sorted(request.static_images)))
    return "; ".join(needs)


class BurstAction(StrEnum):
    BURST = "burst"
    QUEUE = "queue"
    REJECT = "reject"


@dataclass(frozen=True)
class BurstOffer:
    """One cloud able to serve the request within the budget, and what it would cost."""

    cloud: str
    instance_type: str
    size: CloudSize
    estimated_cost: float


@dataclass(frozen=True)
class BurstDecision:
    """What to do with a request no site could place, and why.

    For ``burst``, ``offers`` lists every cloud that can serve the request
    within the budget, cheapest first; ``cloud``, ``instance_type``, ``size``
    and ``estimated_cost`` describe the first.  :meth:`as_placement` turns the
    offers into candidates for :func:`federation.attempts.place_with_failover`,
    so a cloud that keeps answering 500 or throttling is skipped for the next.
    """

    action: BurstAction
    reason: str
    offers: tuple[BurstOffer, ...] = ()

    @property
    def cloud(self) -> str | None:
        return self.offers[0].cloud if self.offers else None

    @property
    def instance_type(self) -> str | None:
        return self.offers[0].instance_type if self.offers else None

    @property
    def size(self) -> CloudSize | None:
        return self.offers[0].size if self.offers else None

    @property
    def estimated_cost(self) -> float:
        return self.offers[0].estimated_cost if self.offers else 0.0

    def as_placement(self, request: PlacementRequest) -> PlacementDecision:
        """The offers as ranked candidates (score = minus the estimated cost)."""
        candidates = tuple(
            Candidate(
                site=offer.cloud,
                score=-offer.estimated_cost,
                rank=rank,
                image_cached=False,
                components={"estimated_cost": offer.estimated_cost},
            )
            for rank, offer in enumerate(self.offers, start=1)
        )
        return PlacementDecision(request, candidates, {}, complete=True)


@dataclass(frozen=True, eq=False)
class BurstPolicy:
    """Who may burst, where to, and within which budget.

    ``allowed_users`` / ``allowed_vos``: accounts and VOs (or groups) allowed
    to burst; ``allow_everyone`` lifts the restriction.  ``budget_per_period``
    is in the clouds' currency unit per ``period_seconds`` (a rolling window).
    ``default_hours`` is the run time assumed when a request does not say.
    ``when_denied`` is what happens to a request that may not burst: ``reject``
    (409) or ``queue`` (wait for federation capacity).
    """

    clouds: tuple[PublicCloudConfig, ...] = ()
    allowed_users: frozenset[str] = frozenset()
    allowed_vos: frozenset[str] = frozenset()
    allow_everyone: bool = False
    budget_per_period: float = 0.0
    period_seconds: float = 30 * 24 * 3600.0
    default_hours: float = 1.0
    when_denied: BurstAction = BurstAction.REJECT

    def __post_init__(self) -> None:
        object.__setattr__(self, "clouds", tuple(self.clouds))
        object.__setattr__(self, "allowed_users", frozenset(self.allowed_users))
        object.__setattr__(self, "allowed_vos", frozenset(self.allowed_vos))
        object.__setattr__(self, "when_denied", BurstAction(self.when_denied))
        if self.when_denied is BurstAction.BURST:
            raise ValueError("when_denied must be 'queue' or 'reject'")
        if self.budget_per_period < 0 or self.period_seconds <= 0 or self.default_hours <= 0:
            raise ValueError("budget must be >= 0, period and default_hours > 0")
        names = [c.name for c in self.clouds]
        if len(set(names)) != len(names):
            raise ValueError("cloud names must be unique")

    def _denied(self, reason: str) -> BurstDecision:
        return BurstDecision(self.when_denied, reason)

    def user_allowed(self, request: PlacementRequest) -> bool:
        """True if the request's user or one of its VOs/groups may burst."""
        if self.allow_everyone:
            return True
        if request.user is not None and request.user in self.allowed_users:
            return True
        return not self.allowed_vos.isdisjoint(request.vos)

    def decide(
        self, request: PlacementRequest, *, placement_found: bool, spent: float = 0.0
    ) -> BurstDecision:
        """Burst, queue or reject ``request``; see the module docstring for the order of checks.

        ``placement_found`` is False when the placer found no candidate *or*
        every candidate refused or failed.  ``spent`` is what bursting has
        already cost in the current period.
        """
        if placement_found:
            return BurstDecision(
                BurstAction.REJECT,
                "a site can place the request; bursting is only for when no site can",
            )
        if request.wait:
            return BurstDecision(BurstAction.QUEUE, "the request asked to wait for capacity")
        if request.confidential:
            return self._denied("confidential requests never leave the federation")
        if request.sites is not None:
            return self._denied(
                f"the request is pinned to sites [{', '.join(request.sites)}]; never burst"
            )
        needs = site_resources(request)
        if needs:
            return self._denied(
                f"the request needs site resources a public cloud does not have ({needs})"
            )
        if not request.allow_burst:
            return self._denied("the user opted out of bursting for this request")
        if not self.user_allowed(request):
            vos = ", ".join(sorted(request.vos)) or "none"
            return self._denied(
                f"neither user {request.user or '(anonymous)'} nor their VOs ({vos}) "
                "may burst to public clouds"
            )
        if not self.clouds:
            return self._denied("no public cloud is configured")
        hours = request.expected_hours or self.default_hours
        offers: list[BurstOffer] = []
        why_not: list[str] = []
        for cloud in self.clouds:
            if request.image not in cloud.images:
                why_not.append(f"{cloud.name}: image {request.image} not mapped")
                continue
            sized = cloud.size_for(request.instance_type, request.vcpus, request.memory_mib)
            if sized is None:
                what = request.instance_type or f"{request.vcpus} CPUs / {request.memory_mib} MiB"
                why_not.append(f"{cloud.name}: no size for {what}")
                continue
            itype, size = sized
            offers.append(BurstOffer(cloud.name, itype, size, size.price_per_hour * hours))
        if not offers:
            return self._denied("no public cloud can serve the request: " + "; ".join(why_not))
        offers.sort(key=lambda o: (o.estimated_cost, o.cloud))
        left = self.budget_per_period - spent
        affordable = tuple(o for o in offers if o.estimated_cost <= left + 1e-9)
        if not affordable:
            cheapest = offers[0]
            return self._denied(
                f"burst budget exhausted: {spent:.2f} of {self.budget_per_period:.2f} spent this "
                f"period, the request needs {cheapest.estimated_cost:.2f} "
                f"({hours:g} h on {cheapest.cloud})"
            )
        best = affordable[0]
        return BurstDecision(
            BurstAction.BURST,
            f"no site can place the request; bursting to {best.cloud} as {best.size.size_id} "
            f"at {best.size.price_per_hour:g}/h (estimated {best.estimated_cost:.2f}, "
            f"{left - best.estimated_cost:.2f} of the budget left)",
            offers=affordable,
        )


@dataclass
class BurstBudget:
    """In-memory ledger of burst spending over a rolling window (persist ``charges`` yourself).

    ``charges`` is a list of ``(timestamp, amount)``; :meth:`spent` sums those
    within ``period_seconds`` before ``now``.
    """

    period_seconds: float
    charges: list[tuple[float, float]] = field(default_factory=list)

    def charge(self, amount: float, at: float) -> None:
        if amount < 0:
            raise ValueError("a charge must be >= 0")
        self.charges.append((at, amount))

    def spent(self, now: float) -> float:
        start = now - self.period_seconds
        return sum(amount for at, amount in self.charges if start < at <= now)

    def prune(self, now: float) -> None:
        """Drop charges older than the window (they no longer count)."""
        start = now - self.period_seconds
        self.charges = [(at, a) for at, a in self.charges if at > start]

    @classmethod
    def load(cls, period_seconds: float, charges: Iterable[tuple[float, float]]) -> BurstBudget:
        return cls(period_seconds, list(charges))
