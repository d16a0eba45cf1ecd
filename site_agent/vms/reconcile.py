"""Reconciliation: the database and the hypervisors made to agree, at start-up and periodically.

Run once when the agent starts (after a crash, a ``kill -9`` or a clean
stop) and then every ``[vm] monitor_interval_seconds`` by the monitor, so
that no VM is lost and none is left orphaned:

* a Stratus domain with no VM row (or a row already finished) is destroyed,
  undefined, and its files quarantined;
* a row in ``boot``/``running`` whose domain runs is (again) ``running``,
  and its readiness is watched if not seen yet;
* a row whose domain vanished or stopped is finished: ``failed`` if it
  vanished, ``done`` if the guest powered off (or crashed), files quarantined;
* a row caught in ``pending``/``prolog`` (or ``boot`` without a domain) is
  failed and its files removed;
* a row in ``shutdown`` has its stop completed, including a pending save of
  its root disk as an image;
* a pending save whose VM is no longer stopping is failed (it can never
  complete), and every lease or disk attachment of an ended VM is freed.

VMs something in this process is working on (:meth:`VmRuntime.busy`) are
left alone; hosts that do not answer are skipped until the next round.
"""

from __future__ import annotations

import asyncio
import logging

from core.vm_state import VmState
from site_agent.compute.driver import DomainState
from site_agent.compute.errors import ComputeError
from site_agent.images.cache import ImageCache
from site_agent.quarantine import Quarantine
from site_agent.vms.devices import VmDevices
from site_agent.vms.models import Vm
from site_agent.vms.power import GONE, Power
from site_agent.vms.provisioning import Provisioner
from site_agent.vms.readiness import Readiness
from site_agent.vms.runtime import VmRuntime

log = logging.getLogger(__name__)


class Reconciler:
    """Reconciliation and the monitor that repeats it (see the module docstring)."""

    def __init__(
        self,
        runtime: VmRuntime,
        *,
        images: ImageCache,
        quarantine: Quarantine,
        devices: VmDevices,
        provisioner: Provisioner,
        power: Power,
        readiness: Readiness,
    ) -> None:
        self.rt = runtime
        self.images = images
        self.quarantine = quarantine
        self.devices = devices
        self.provisioner = provisioner
        self.power = power
        self.readiness = readiness

    async def reconcile(self) -> list[str]:
        """One round; returns what was done (also logged as warnings)."""
        actions: list[str] = []
        busy = self.rt.busy()
        rows: list[Vm] = await self.rt.db(self.rt.repo.list_vms, None)
        by_id = {vm.id: vm for vm in rows}
        for uri, host in self.rt.hosts.hosts.items():
            if host.info is None:
                continue
            try:
                domains = await host.driver.list_domains()
            except ComputeError as exc:
                log.error("reconcile: cannot list domains on %s: %s", uri, exc)
                continue
            for vm_id, dstate in domains.items():
                vm = by_id.get(vm_id)
                if vm is not None and VmState(vm.state).is_active and vm.host_uri == uri:
                    continue
                if vm_id in busy:
                    continue
                await host.driver.destroy(vm_id)
                await host.driver.undefine(vm_id)
                owner = vm.owner if vm is not None else "unknown"
                await self.rt.db(self.quarantine.put, vm_id, owner)
                actions.append(
                    f"orphan domain {vm_id} on {uri} ({dstate}) destroyed; files quarantined"
                )
            for vm in rows:
                if vm.host_uri != uri or vm.id in busy or not VmState(vm.state).is_active:
                    continue
                actions.extend(await self._row(vm, domains.get(vm.id, DomainState.MISSING)))
        actions.extend(await self._saves())
        await self.devices.release_finished()
        for action in actions:
            log.warning("reconcile: %s", action)
        return actions

    async def _saves(self) -> list[str]:
        """Fail pending saves whose VM is no longer stopping (they can never complete)."""
        actions = []
        for vm_id, name in (await self.images.pending_saves()).items():
            if vm_id in self.rt.stopping or self.rt.lock(vm_id).locked():
                continue
            vm: Vm | None = await self.rt.db(self.rt.repo.get, vm_id)
            if vm is not None and vm.state == VmState.SHUTDOWN:
                continue
            reason = "save dropped: the VM ended before its root disk was saved"
            if await self.images.drop_save(vm_id, reason) is not None:
                if vm is not None:
                    await self.rt.event(vm_id, f"save as image {name!r}: {reason}")
                actions.append(f"pending save of VM {vm_id} as image {name!r} failed: VM ended")
        return actions

    async def _row(self, vm: Vm, dstate: DomainState) -> list[str]:
        """Bring one active VM row in line with its domain's state ``dstate``."""
        state = VmState(vm.state)
        if state in (VmState.PENDING, VmState.PROLOG) or (state == VmState.BOOT and dstate in GONE):
            assert vm.host_uri is not None
            await self.provisioner.cleanup(vm.id, vm.host_uri)
            await self.rt.transition(
                vm.id, VmState.FAILED, "agent restarted while the VM was being created"
            )
            return [f"VM {vm.id} was being created when the agent stopped: failed, files removed"]
        if state == VmState.SHUTDOWN:
            # A save as image asked by the interrupted stop is done now, not dropped.
            how = await self.power.save_root(
                vm, dstate == DomainState.SHUTOFF, "stop completed after agent restart"
            )
            await self.power.release(vm, how)
            return [f"VM {vm.id} was shutting down: finished"]
        if dstate == DomainState.RUNNING:
            if state == VmState.BOOT:
                await self.rt.transition(
                    vm.id, VmState.RUNNING, "domain found running after agent restart"
                )
            if not vm.ready and not self.readiness.watching(vm.id):
                self.readiness.watch(vm.id, vm.boot_log_offset)
            return [] if state == VmState.RUNNING else [f"VM {vm.id} found running"]
        if dstate in (DomainState.PAUSED, DomainState.SHUTTING_DOWN):
            return []
        reason = {
            DomainState.MISSING: "domain vanished from the hypervisor",
            DomainState.CRASHED: "guest crashed",
            DomainState.SHUTOFF: "guest powered itself off",
        }[dstate]
        await self.rt.transition(vm.id, VmState.SHUTDOWN, reason)
        if dstate == DomainState.MISSING:
            vm = await self.rt.row(vm.id)
            self.readiness.unwatch(vm.id)
            await self.rt.db(self.quarantine.put, vm.id, vm.owner)
            await self.devices.release(vm.id)
            await self.rt.transition(vm.id, VmState.FAILED, reason + "; files quarantined")
        else:
            await self.power.release(vm, reason)
        return [f"VM {vm.id}: {reason}"]

    async def run_monitor(self, interval: float) -> None:
        """Reconcile every ``interval`` seconds (guests that power off, vanished domains)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reconcile()
            except Exception:
                log.exception("periodic reconcile failed; will retry")
