"""Where one VM goes: a site (with failover), a public cloud, the queue, or nowhere.

:meth:`VmPlacement.place` returns a :class:`Placement` whose ``outcome`` is

* ``placed``: a site made the VM (sites tried best first, each create
  carrying the broker's VM id as ``Idempotency-Key``, so a retry after a
  lost answer makes nothing twice);
* ``burst``: no site could, the burst policy allowed it, a public cloud
  made it;
* ``queued``: no site could, and the policy (or the request) says wait: the
  caller enqueues it (this module never touches the queue);
* ``refused``: nothing was made; ``error`` says why, per site.

Every attempt is in ``lines``, for the VM's event log. The VM is made as
the user (``provider.acting_for(user)``): the site records and authorises
the real person. The site receives everything the user asked for, with the
pool placement chose (``Candidate.network``) and the site's own volume ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from auth.delegation import DelegatedUser
from auth.principal import Principal
from broker.errors import InvalidOperation, NotPlaced
from broker.runtime import Runtime, db
from broker.vms.models import BrokerVmCreate
from core.db import utcnow
from core.resources.vms import VmCreate
from federation.attempts import place_with_failover
from federation.bursting import BurstAction, BurstDecision
from federation.constraints import parse_constraints
from federation.errors import (
    AllAttemptsFailed,
    FederationError,
    InvalidConstraint,
    PlacementError,
    ProviderError,
)
from federation.model import Candidate, PlacementDecision, PlacementRequest
from federation.placement import placement_error
from federation.providers.base import Operation, ProviderVM, VMCreateRequest

#: The site's create body for a candidate (its pool, its volume ids).
SpecFor = Callable[[Candidate], VmCreate]


class Outcome(StrEnum):
    PLACED = "placed"
    BURST = "burst"
    QUEUED = "queued"
    REFUSED = "refused"


@dataclass
class Placement:
    """What became of one VM (see the module docstring)."""

    outcome: Outcome
    vm: ProviderVM | None = None
    reason: str = ""
    error: NotPlaced | None = None
    estimated_cost: float = 0.0
    lines: list[tuple[datetime, str | None, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Pinned:
    """A site the VM must go to because of what it uses (its volumes), and why."""

    site: str
    why: str


class VmPlacement:
    """Builds placement requests and places VMs (see the module docstring)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def own_images(
        self, principal: Principal, body: BrokerVmCreate
    ) -> dict[str, frozenset[str]]:
        """Site -> the caller's own images among those the VM needs, where no heartbeat
        offers them (heartbeats carry public images only: a user's saved or registered
        image is known to its site only, and shown to that user).

        Asks the available sites (as the caller, each within ``list_timeout_seconds``)
        only when an image the VM needs is public nowhere; a site that does not
        answer is left out.
        """
        wanted = {body.image, *body.static_disks}
        registry = self.rt.registry
        sites = registry.available_sites()
        for site in sites:
            report = registry.report(site)
            if report is None or report.fetchable_images is None:
                continue  # a site that fetches any image offers no list to check
            wanted -= {*report.cached_images, *report.fetchable_images}
        if not wanted:
            return {}
        user = self.rt.user(principal)

        async def one(site: str) -> frozenset[str]:
            provider = registry.provider(site)
            if not provider.supports(Operation.IMAGES):
                return frozenset()
            try:
                async with asyncio.timeout(self.rt.list_timeout):
                    images = await provider.acting_for(user).list_images()
            except (ProviderError, TimeoutError):
                return frozenset()
            return frozenset(i.name for i in images if i.name in wanted and i.available)

        found = await asyncio.gather(*(one(site) for site in sites))
        return {site: own for site, own in zip(sites, found, strict=True) if own}

    def request(
        self,
        principal: Principal,
        body: BrokerVmCreate,
        pinned: Pinned | None = None,
        own_images: dict[str, frozenset[str]] | None = None,
    ) -> PlacementRequest:
        """The placement request for one VM of ``body``.

        Named sites (``site``, ``site in [...]``) must be sites of the
        federation (404 ``unknown_site``); a VM using volumes is pinned to
        their site, which must agree with what the user named (409).
        """
        constraints = parse_constraints(body.constraints)
        sites = constraints.sites
        if body.site is not None:
            if sites is not None and body.site not in sites:
                raise InvalidConstraint(
                    f"site {body.site!r} is not in the constraint's sites {list(sites)}",
                    text=f"site == {body.site}",
                )
            sites = (body.site,)
        for name in sites or ():
            self.rt.registry.check_site(name)
        if pinned is not None:
            if sites is not None and pinned.site not in sites:
                raise InvalidOperation(
                    f"{pinned.why}, which is not among the sites asked for ({', '.join(sites)})"
                )
            sites = (pinned.site,)
        itype, vcpus, memory = body.sizing()
        return PlacementRequest(
            vcpus=vcpus,
            memory_mib=memory,
            image=body.image,
            network=body.network,
            network_type=body.network_type,
            address=str(body.address) if body.address is not None else None,
            host_tags=frozenset(body.host_tags),
            static_images=frozenset(body.static_disks),
            own_images=own_images or {},
            groups=principal.groups,
            sites=sites,
            location=constraints.location,
            preferred_sites=tuple(body.preferred_sites),
            data_location=body.data_location,
            user=principal.account,
            instance_type=itype,
            confidential=body.confidential,
            allow_burst=body.allow_burst,
            wait=body.queue,
            expected_hours=body.expected_hours,
        )

    async def place(
        self,
        vm_id: str,
        request: PlacementRequest,
        spec_for: SpecFor,
        user: DelegatedUser | None,
        *,
        decision: PlacementDecision | None = None,
        may_defer: bool = True,
    ) -> Placement:
        """Place one VM. ``decision``: a plan made by the queue drain (its capacity
        already reserved). ``may_defer`` False (a queued VM starting): no burst
        policy; a VM no site takes now is ``refused`` (and goes back to the queue)."""
        lines: list[tuple[datetime, str | None, str]] = []

        def record(site: str | None, message: str) -> None:
            lines.append((utcnow(), site, message))

        reserve = decision is None

        async def attempt(candidate: Candidate) -> ProviderVM:
            provider = self.rt.registry.provider(candidate.site).acting_for(user)
            create = VMCreateRequest(vm_id=vm_id, idempotency_key=vm_id, spec=spec_for(candidate))
            vm = await provider.create_vm(create)
            if reserve:  # a site's next heartbeat replaces the estimate; clouds are not tracked
                self.rt.placer.reserve(candidate.site, request.vcpus, request.memory_mib)
            return vm

        timeout = self.rt.config.broker.attempt_timeout_seconds
        decision = decision or self.rt.placer.decide(request)
        failure: FederationError
        if decision.found:
            try:
                vm = await place_with_failover(decision, attempt, record, attempt_timeout=timeout)
            except AllAttemptsFailed as exc:
                failure = exc
            else:
                reason = f"site {vm.site} accepted the VM (its id there: {vm.provider_id})"
                return Placement(Outcome.PLACED, vm, reason, lines=lines)
        else:
            failure = placement_error(decision)
            record(None, str(failure))
        if not may_defer:
            return Placement(Outcome.REFUSED, reason=f"could not start: {failure}", lines=lines)
        since = utcnow() - timedelta(seconds=self.rt.policy.period_seconds)
        spent = await db(self.rt.vms.burst_spent, since)
        burst = self.rt.policy.decide(request, placement_found=False, spent=spent)
        record(None, f"burst policy: {burst.action.value}: {burst.reason}")
        if burst.action is BurstAction.QUEUE:
            return Placement(Outcome.QUEUED, reason=burst.reason, lines=lines)
        if burst.action is not BurstAction.BURST:
            return Placement(Outcome.REFUSED, error=self._refusal(failure, burst), lines=lines)
        costs = {offer.cloud: offer.estimated_cost for offer in burst.offers}
        try:
            vm = await place_with_failover(
                burst.as_placement(request), attempt, record, attempt_timeout=timeout
            )
        except AllAttemptsFailed as exc:
            details = {**_failure_details(failure), **_failure_details(exc)}
            details["sites"] = _failure_details(failure).get("sites", {})
            details["burst"] = {"action": burst.action.value, "reason": burst.reason}
            error = NotPlaced(
                f"no site could place the VM and bursting failed: {exc}",
                details=details,
                **_status(exc),
            )
            return Placement(Outcome.REFUSED, error=error, lines=lines)
        return Placement(
            Outcome.BURST,
            vm,
            f"burst to public cloud {vm.site}: {burst.reason}",
            estimated_cost=costs.get(vm.site, 0.0),
            lines=lines,
        )

    def _refusal(self, failure: FederationError, burst: BurstDecision) -> NotPlaced:
        """The error for a VM neither placed nor burst nor queued, with both reasons."""
        details = _failure_details(failure)
        sites = details.get("sites")
        if isinstance(sites, dict):  # a trusted site without heartbeats is not "unknown"
            registry = self.rt.registry
            details["sites"] = {
                name: (
                    registry.status(name)[1] or why
                    if why == "unknown site" and registry.is_site(name)
                    else why
                )
                for name, why in sites.items()
            }
        details["burst"] = {"action": burst.action.value, "reason": burst.reason}
        return NotPlaced(str(failure), details=details, **_status(failure))


def _failure_details(failure: FederationError) -> dict[str, Any]:
    """``sites`` (reasons per site) and ``attempts`` of a placement failure."""
    if isinstance(failure, PlacementError):
        return {"sites": dict(failure.rejected)}
    if isinstance(failure, AllAttemptsFailed):
        attempts = [
            {"site": a.site, "outcome": a.outcome, "reason": a.reason} for a in failure.attempts
        ]
        return {
            "sites": {a.site: f"{a.outcome}: {a.reason}" for a in failure.attempts},
            "attempts": attempts,
        }
    return {}


def _status(failure: FederationError) -> dict[str, Any]:
    """409 when every site answered no; 503 when some failed (trying later may work)."""
    if isinstance(failure, AllAttemptsFailed) and not failure.all_refused:
        return {"status": 503, "code": "sites_unavailable"}
    return {}
