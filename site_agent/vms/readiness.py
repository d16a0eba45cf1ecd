"""Guest readiness: watching a VM's console for its readiness line, and waiting for a VM.

A VM is ``running`` once its domain runs; it is *ready* once the guest has
applied its context and printed ``STRATUS-READY <vm-id> <ip>`` on the serial
console (``site_agent.vms.console``). A watcher per VM reads the console log
from the byte offset where the current boot began (so a reboot never takes
the previous boot's line), sets ``ready`` and the reported address, and
wakes every waiter. No line within ``[vm] ready_timeout_seconds`` is logged
as an event; the VM keeps running, not ready.
"""

from __future__ import annotations

import asyncio

from auth.principal import Principal
from core.vm_state import VmState
from site_agent.vms.console import wait_for_ready
from site_agent.vms.models import Vm
from site_agent.vms.runtime import VmRuntime


class Readiness:
    """Readiness watchers (one per VM at most) and waits on a VM's state."""

    def __init__(self, runtime: VmRuntime) -> None:
        self.rt = runtime

    def watch(self, vm_id: str, offset: int) -> None:
        """Watch the console of ``vm_id`` from byte ``offset``, replacing any earlier watcher."""
        old = self.rt.watchers.get(vm_id)
        if old is not None:
            old.cancel()
        self.rt.spawn(self._watch(vm_id, offset), self.rt.watchers, vm_id)

    def unwatch(self, vm_id: str) -> None:
        """Stop watching ``vm_id`` (its domain is going away)."""
        task = self.rt.watchers.pop(vm_id, None)
        if task is not None:
            task.cancel()

    def watching(self, vm_id: str) -> bool:
        return vm_id in self.rt.watchers

    async def _watch(self, vm_id: str, offset: int) -> None:
        timeout = self.rt.policy.ready_timeout_seconds
        found = await wait_for_ready(
            self.rt.layout.console_log(vm_id), vm_id, offset=offset, timeout=timeout
        )
        if found is None:
            await self.rt.event(vm_id, f"no readiness line on the console within {timeout:.0f} s")
            return
        ip = f" with address {found.ip}" if found.ip else " (no address)"
        await self.rt.update(vm_id, f"guest ready{ip}", ready=True, ip=found.ip)

    async def wait_for(
        self, principal: Principal, vm_id: str, condition: str, timeout: float
    ) -> Vm:
        """The VM once it is ``running`` / ``ready`` (``condition``) or terminal, or at ``timeout``.

        Woken by every VM change, and at least once a second.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            vm = await self.rt.get_for(principal, vm_id)
            state = VmState(vm.state)
            if (
                state.is_terminal
                or (condition == "running" and state == VmState.RUNNING)
                or (condition == "ready" and vm.ready)
            ):
                return vm
            remaining = deadline - loop.time()
            if remaining <= 0:
                return vm
            await self.rt.wait_changed(min(remaining, 1.0))
