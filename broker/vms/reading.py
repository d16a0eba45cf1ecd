"""Reading VMs: show (optionally waiting for running/ready), list, and syncing the records.

Every read asks the VM's provider (as the caller, see
:meth:`broker.runtime.Runtime.acting`) and copies what it reports into the
broker's record. Listings ask every provider concurrently, each within
``list_timeout_seconds``. A provider that is unavailable (a site that
missed its heartbeats) is not asked; one that does not answer makes the
listing ``partial`` with a warning; in both cases its VMs are shown from the
broker's records in state ``unknown`` with the reason. Nothing is deleted
because a site is down.

State changes are logged in the broker's event log only for providers that
keep no event log of their own (a site logs its own; they are merged when
the events are read).
"""

from __future__ import annotations

import asyncio
import time

from auth.principal import Principal
from broker.errors import VmNotFound
from broker.runtime import Runtime, db
from broker.vms.models import BrokerVm, BrokerVmList, BrokerVmPublic
from broker.vms.views import public
from core.resources.vms import VmShowQuery
from core.vm_state import VmState, parse_state
from federation.errors import ProviderError, ProviderNotFound, SiteFailed
from federation.providers.base import ComputeProvider, Operation, ProviderVM, WaitFor

_WAIT_STEP = 5.0  # seconds a provider's wait holds at most per call


class VmReader:
    """``GET /vms`` and ``GET /vms/{id}`` (see the module docstring)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def row_for(self, principal: Principal, vm_id: str) -> BrokerVm:
        """The caller's VM record (admins: anyone's; group members: the group's); 404."""
        row = await db(self.rt.vms.get, vm_id)
        if row is None or not principal.can_access(row.owner, row.group):
            raise VmNotFound(f"no VM with id {vm_id!r}")
        return row

    def acting(self, principal: Principal, row: BrokerVm) -> ComputeProvider:
        """The provider of ``row`` as it acts for the caller."""
        assert row.site is not None
        return self.rt.acting(self.rt.registry.provider(row.site), principal, row.owner, row.group)

    async def sync(self, row: BrokerVm, vm: ProviderVM, reason: str | None = None) -> BrokerVm:
        """Copy what the provider reports of ``row``'s VM into the record."""
        provider = self.rt.registry.provider(vm.site)
        return await db(
            self.rt.vms.sync,
            row.id,
            vm,
            log_state=not provider.supports(Operation.EVENTS),
            reason=reason or f"{vm.site}: {vm.state_reason or 'state reported by the provider'}",
        )

    def _sync_many(self, seen: list[tuple[BrokerVm, ProviderVM]]) -> dict[str, BrokerVm]:
        out = {}
        for row, vm in seen:
            logs = self.rt.registry.provider(vm.site).supports(Operation.EVENTS)
            reason = f"{vm.site}: {vm.state_reason or 'state reported by the provider'}"
            out[row.id] = self.rt.vms.sync(row.id, vm, log_state=not logs, reason=reason)
        return out

    async def get(self, principal: Principal, vm_id: str, query: VmShowQuery) -> BrokerVmPublic:
        """One VM, fresh from its provider; with ``wait`` until running/ready or terminal."""
        row = await self.row_for(principal, vm_id)
        deadline = time.monotonic() + query.timeout
        while True:
            row, unknown = await self._refresh(principal, row, query.wait, deadline)
            view = public(row, self.rt.queue, unknown_reason=unknown)
            if query.wait is None or unknown is not None or _reached(view, query.wait):
                return view
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return view
            if row.site is None or not self.rt.registry.provider(row.site).supports(Operation.WAIT):
                # Queued, or a provider that cannot hold the answer: ask again shortly.
                await asyncio.sleep(min(1.0, remaining))

    async def _refresh(
        self, principal: Principal, row: BrokerVm, wait: WaitFor | None, deadline: float
    ) -> tuple[BrokerVm, str | None]:
        """Ask the VM's provider for it; ``(row, unknown reason or None)``."""
        if row.site is None or row.site_vm_id is None or parse_state(row.state).is_final:
            return row, None
        available, reason = self.rt.registry.status(row.site)
        if not available:
            return row, reason
        limit = self.rt.list_timeout
        provider = self.acting(principal, row)
        try:
            if wait is not None and provider.supports(Operation.WAIT):
                step = max(0.1, min(_WAIT_STEP, deadline - time.monotonic()))
                async with asyncio.timeout(limit + step):
                    vm = await provider.wait_vm(row.site_vm_id, wait, step)
            else:
                async with asyncio.timeout(limit):
                    vm = await provider.get_vm(row.site_vm_id)
        except ProviderNotFound:
            return row, f"site {row.site} does not know this VM any more"
        except SiteFailed as exc:
            return row, f"site {row.site} did not answer: {exc.reason}"
        except TimeoutError:
            return row, f"site {row.site} did not answer within {limit:g}s"
        except ProviderError as exc:
            return row, f"site {row.site} refused to show the VM: {exc.reason}"
        return await self.sync(row, vm), None

    async def list_vms(
        self, principal: Principal, *, every_owner: bool, include_done: bool
    ) -> BrokerVmList:
        """The caller's VMs on every site and cloud, each provider asked concurrently."""
        owner = None if (every_owner and principal.is_admin) else principal.account
        rows = await db(self.rt.vms.list_vms, owner, include_done=include_done)
        by_site: dict[str, list[BrokerVm]] = {}
        for row in rows:
            if row.site and row.site_vm_id and not parse_state(row.state).is_final:
                by_site.setdefault(row.site, []).append(row)
        warnings: list[str] = []
        unknown: dict[str, str] = {}
        seen: list[tuple[BrokerVm, ProviderVM]] = []

        async def one(site: str, site_rows: list[BrokerVm]) -> None:
            available, reason = self.rt.registry.status(site)
            if not available:
                warnings.append(f"{reason}; its VMs are shown as last known, in state unknown")
                for r in site_rows:
                    unknown[r.id] = reason or "site unavailable"
                return
            # The caller's own VMs as the caller; an admin's listing of everyone's as
            # the federation (the broker's records decided who sees what).
            provider = self.rt.registry.provider(site)
            acting = provider.acting_for(None if owner is None else self.rt.user(principal))
            try:
                async with asyncio.timeout(self.rt.list_timeout):
                    live = {vm.provider_id: vm for vm in await acting.list_vms(include_done=True)}
            except (SiteFailed, TimeoutError) as exc:
                why = (
                    exc.reason
                    if isinstance(exc, SiteFailed)
                    else f"no answer within {self.rt.list_timeout:g}s"
                )
                warnings.append(f"site {site} did not answer ({why}); listing is partial")
                for r in site_rows:
                    unknown[r.id] = f"site {site} did not answer: {why}"
                return
            for r in site_rows:
                vm = live.get(r.site_vm_id or "")
                if vm is None:
                    unknown[r.id] = f"site {site} does not list this VM"
                else:
                    seen.append((r, vm))

        await asyncio.gather(*(one(site, site_rows) for site, site_rows in by_site.items()))
        fresh = await db(self._sync_many, seen) if seen else {}
        views = [
            public(fresh.get(r.id, r), self.rt.queue, unknown_reason=unknown.get(r.id))
            for r in rows
        ]
        return BrokerVmList(vms=views, partial=bool(warnings), warnings=sorted(warnings))


def _reached(view: BrokerVmPublic, wait: str) -> bool:
    if view.state.is_terminal:
        return True
    if wait == "ready":
        return view.ready
    return view.state is VmState.RUNNING
