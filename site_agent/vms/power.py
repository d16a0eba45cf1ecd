"""Power operations on a VM: stop (optionally saving its root disk as an image), kill, reboot.

* **stop**: the ACPI power button, in the background; if the guest has not
  powered off within ``[vm] stop_timeout_seconds`` the domain is destroyed.
  With ``save`` the image name is reserved at once (409 ``image_exists`` if
  taken, and nothing is stopped) and, once the guest is off, the root disk
  becomes that image, owned by the caller. Until then the save is pending.
* **kill**: destroy now and free everything (domain, lease, disk attachments);
  the VM's files go to quarantine; idempotent on a ``done`` VM. A kill is
  refused (409 ``save_pending``) while a stop's save is pending, unless
  forced (the save is then dropped, and the event log says so). A kill
  cancels a create still being provisioned. A hypervisor error while
  freeing leaves the VM ``shutdown`` (503): a retried kill or the monitor
  finishes it.
* **reboot**: a hard reset of a running VM; readiness is watched again from
  the console offset where the new boot begins.

Each operation holds the VM's lock while it changes the VM.
"""

from __future__ import annotations

import asyncio
import contextlib

from auth.principal import Principal
from core.resources.images import SaveAs
from core.vm_state import VmState
from site_agent.compute.driver import DomainState
from site_agent.compute.errors import ComputeError
from site_agent.images.cache import ImageCache
from site_agent.images.errors import ImageError
from site_agent.owners import actor
from site_agent.quarantine import Quarantine
from site_agent.vms.console import log_size
from site_agent.vms.devices import VmDevices
from site_agent.vms.errors import HypervisorFailed, InvalidVmState, SavePending
from site_agent.vms.models import Vm
from site_agent.vms.readiness import Readiness
from site_agent.vms.runtime import VmRuntime

#: Domain states in which the guest no longer runs.
GONE = frozenset({DomainState.SHUTOFF, DomainState.MISSING, DomainState.CRASHED})


class Power:
    """Stop, kill and reboot (see the module docstring)."""

    def __init__(
        self,
        runtime: VmRuntime,
        images: ImageCache,
        quarantine: Quarantine,
        devices: VmDevices,
        readiness: Readiness,
    ) -> None:
        self.rt = runtime
        self.images = images
        self.quarantine = quarantine
        self.devices = devices
        self.readiness = readiness

    # ----- stop ------------------------------------------------------------------------

    async def stop(self, principal: Principal, vm_id: str, save: SaveAs | None = None) -> Vm:
        """Press the power button of a running VM; the rest of the stop runs in the background."""
        async with self.rt.lock(vm_id):
            vm = await self.rt.get_for(principal, vm_id)
            if vm.state != VmState.RUNNING:
                raise InvalidVmState(f"VM {vm_id} is {vm.state}; only a running VM can be stopped")
            reason = f"stop requested by {actor(principal)}: ACPI shutdown sent"
            if save is not None:
                # ImageNameTaken (409 image_exists) if the name is in use: nothing is stopped.
                await self.images.reserve_save(principal.account, save, vm_id, vm.image)
                reason += f"; the root disk will be saved as image {save.name!r}"
            try:
                vm = await self.rt.transition(vm_id, VmState.SHUTDOWN, reason)
            except BaseException:
                if save is not None:
                    await self.images.drop_save(vm_id, "save dropped: the stop failed")
                raise
        self.rt.spawn(self._finish_stop(vm_id), self.rt.stopping, vm_id)
        return vm

    async def _finish_stop(self, vm_id: str) -> None:
        async with self.rt.lock(vm_id):
            vm = await self.rt.row(vm_id)
            assert vm.host_uri is not None
            driver = self.rt.hosts.driver(vm.host_uri)
            self.readiness.unwatch(vm_id)
            timeout = self.rt.policy.stop_timeout_seconds
            clean = False
            try:
                await driver.shutdown(vm_id)
                clean = await self._wait_gone(vm_id, vm.host_uri, timeout)
                if not clean:
                    await self.rt.event(
                        vm_id, f"guest did not power off within {timeout:.0f} s; destroying it"
                    )
                how = "guest powered off cleanly" if clean else "destroyed after stop timeout"
            except ComputeError as exc:
                how = f"shutdown failed ({exc}); destroyed"
            how = await self.save_root(vm, clean, how)
            await self.release(vm, how)

    async def _wait_gone(self, vm_id: str, host_uri: str, timeout: float) -> bool:
        """Poll the domain until the guest is off (True) or ``timeout`` passes (False)."""
        driver = self.rt.hosts.driver(host_uri)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if await driver.state(vm_id) in GONE:
                return True
            await asyncio.sleep(0.25)
        return False

    async def save_root(self, vm: Vm, clean: bool, how: str) -> str:
        """Save ``vm``'s root disk as the image its stop asked for, if any: ``how`` + outcome.

        The domain is destroyed first (nothing to do once the guest is off),
        so the disk is not in use. The start and the result of the save go to
        the event log. A failed save marks the image ``failed``; the stop
        still completes.
        """
        name = await self.images.pending_save(vm.id)
        if name is None:
            return how
        assert vm.host_uri is not None
        note = "" if clean else "; guest powered off by force: file systems may need a check"
        try:
            await self.rt.hosts.driver(vm.host_uri).destroy(vm.id)
        except ComputeError as exc:
            reason = f"save failed: the VM could not be powered off: {exc}"
            await self.images.drop_save(vm.id, reason)
            await self.rt.event(vm.id, f"save as image {name!r} failed: {reason}")
            return how + f"; save as image {name!r} failed"
        await self.rt.event(vm.id, f"saving the root disk as image {name!r}")
        try:
            image = await self.images.complete_save(vm.id, self.rt.layout.root_disk(vm.id), note)
        except ImageError as exc:
            await self.rt.event(vm.id, f"save as image {name!r} failed: {exc}")
            return how + f"; save as image {name!r} failed"
        await self.rt.event(
            vm.id,
            f"root disk saved as image {name!r}: {image.size} bytes, sha256 {image.sha256}{note}",
        )
        return how + f"; root disk saved as image {name!r}"

    # ----- kill ------------------------------------------------------------------------

    async def kill(self, principal: Principal, vm_id: str, *, force: bool = False) -> Vm:
        """Destroy the VM now and free everything; its files go to quarantine. Idempotent."""
        await self.rt.get_for(principal, vm_id)
        pending = await self.images.pending_save(vm_id)
        if pending is not None:
            if not force:
                raise SavePending(
                    f"VM {vm_id} is stopping to save its root disk as image {pending!r};"
                    " wait for the stop to finish, or kill with force=true to drop the save",
                    pending,
                )
            await _cancel(self.rt.stopping.get(vm_id))
            dropped = await self.images.drop_save(
                vm_id, f"save dropped: VM {vm_id} was killed (force=true) before it was saved"
            )
            if dropped is not None:
                await self.rt.event(
                    vm_id,
                    f"kill with force=true: the pending save as image {dropped!r} was dropped",
                )
        await _cancel(self.rt.provisioning.get(vm_id))
        async with self.rt.lock(vm_id):
            vm = await self.rt.row(vm_id)
            if vm.state == VmState.DONE:
                return vm
            if vm.state not in (VmState.FAILED, VmState.SHUTDOWN):
                vm = await self.rt.transition(
                    vm_id, VmState.SHUTDOWN, f"kill requested by {actor(principal)}"
                )
            return await self.release(vm, "killed")

    async def release(self, vm: Vm, how: str) -> Vm:
        """Destroy and undefine the domain, quarantine the files, free devices, mark ``done``."""
        self.readiness.unwatch(vm.id)
        if vm.host_uri is not None:
            driver = self.rt.hosts.driver(vm.host_uri)
            try:
                await driver.destroy(vm.id)
                await driver.undefine(vm.id)
            except ComputeError as exc:
                # The VM stays in ``shutdown``; a retried kill or the monitor finishes it.
                await self.rt.event(vm.id, f"hypervisor error while freeing: {exc}")
                raise HypervisorFailed(
                    f"hypervisor error on {vm.host_uri}: {exc}; retry the kill"
                ) from exc
        expires = await self.rt.db(self.quarantine.put, vm.id, vm.owner)
        note = f"; disks quarantined until {expires:%Y-%m-%d %H:%M:%S} UTC" if expires else ""
        freed = await self.devices.release(vm.id)
        note += f"; {freed}" if freed else ""
        return await self.rt.transition(vm.id, VmState.DONE, how + note, ready=False)

    # ----- reboot ----------------------------------------------------------------------

    async def reboot(self, principal: Principal, vm_id: str) -> Vm:
        """Hard reset of a running VM; readiness is awaited again from the new boot."""
        async with self.rt.lock(vm_id):
            vm = await self.rt.get_for(principal, vm_id)
            if vm.state != VmState.RUNNING:
                raise InvalidVmState(f"VM {vm_id} is {vm.state}; only a running VM can be rebooted")
            assert vm.host_uri is not None
            offset = log_size(self.rt.layout.console_log(vm_id))
            await self.rt.hosts.driver(vm.host_uri).reboot(vm_id)
            vm = await self.rt.update(
                vm_id,
                f"rebooted (hard reset) by {actor(principal)}",
                ready=False,
                boot_log_offset=offset,
            )
            self.readiness.watch(vm_id, offset)
            return vm


async def _cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel a background operation of the VM and wait until it has finished."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
