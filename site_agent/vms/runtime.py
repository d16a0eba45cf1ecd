"""What every part of the VM lifecycle shares: the rows, the hosts, the files, locks and tasks.

One :class:`VmRuntime` per site. Admission, provisioning, power operations,
hot-plug, readiness watching and reconciliation (one module each, wired by
``site_agent.vms.lifecycle``) all go through it, so that:

* every state change goes through :meth:`VmRuntime.transition`, which checks
  the state machine (``site_agent.vms.states``), writes the event log and
  wakes whoever waits for a change (:meth:`VmRuntime.wait_changed`);
* an operation on one VM holds that VM's lock (:meth:`VmRuntime.lock`), and
  no lock is held across another VM's work;
* background work (provisioning, stops, readiness watchers) is spawned here
  and registered by VM id, so a kill can cancel a create in progress and
  reconciliation leaves alone the VMs something is working on
  (:meth:`VmRuntime.busy`);
* blocking work (SQL) runs in a thread: handlers only await.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from auth.principal import Principal
from core.vm_state import VmState
from site_agent.config import VmPolicy
from site_agent.host_pool import HostPool
from site_agent.layout import StateLayout
from site_agent.vms.errors import VmNotFound
from site_agent.vms.models import Vm
from site_agent.vms.repository import VmRepository

log = logging.getLogger(__name__)

T = TypeVar("T")


class VmRuntime:
    """Shared state and helpers of the VM lifecycle (see the module docstring)."""

    def __init__(
        self, repo: VmRepository, hosts: HostPool, layout: StateLayout, policy: VmPolicy
    ) -> None:
        self.repo = repo
        self.hosts = hosts
        self.layout = layout
        self.policy = policy
        self._locks: dict[str, asyncio.Lock] = {}
        #: Background tasks by VM id: creates being provisioned, stops, readiness watchers.
        self.provisioning: dict[str, asyncio.Task[None]] = {}
        self.stopping: dict[str, asyncio.Task[None]] = {}
        self.watchers: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Condition()

    # ----- locks and tasks ------------------------------------------------------

    def lock(self, vm_id: str) -> asyncio.Lock:
        """The lock of one VM: held by every operation that changes it."""
        return self._locks.setdefault(vm_id, asyncio.Lock())

    def busy(self) -> set[str]:
        """VMs something in this process is working on (reconciliation leaves them alone)."""
        return (
            set(self.provisioning)
            | set(self.stopping)
            | {vm_id for vm_id, lock in self._locks.items() if lock.locked()}
        )

    def spawn(
        self,
        coro: Coroutine[Any, Any, None],
        registry: dict[str, asyncio.Task[None]] | None = None,
        key: str | None = None,
    ) -> asyncio.Task[None]:
        """Run ``coro`` in the background (cancelled by :meth:`close`), under ``registry[key]``.

        The registry entry goes when the task ends, unless a newer task took its place.
        """
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        if registry is not None and key is not None:
            registry[key] = task
            task.add_done_callback(
                lambda done: registry.pop(key, None) if registry.get(key) is done else None
            )
        return task

    async def close(self) -> None:
        """Cancel background tasks (VM state stays as recorded; reconcile fixes it on restart)."""
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ----- rows -----------------------------------------------------------------------

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking repository call in a thread."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def row(self, vm_id: str) -> Vm:
        """The VM's row (it must exist: callers hold an id the site made)."""
        vm = await self.db(self.repo.get, vm_id)
        if vm is None:
            raise VmNotFound(vm_id)
        return vm

    async def get_for(self, principal: Principal, vm_id: str) -> Vm:
        """The VM if the caller may see it; ``VmNotFound`` otherwise (existence is not leaked)."""
        vm = await self.db(self.repo.get, vm_id)
        if vm is None or not principal.can_access(vm.owner, vm.group):
            raise VmNotFound(vm_id)
        return vm

    async def transition(self, vm_id: str, target: VmState, reason: str, **fields: Any) -> Vm:
        """Move the VM to ``target`` (checked against the state machine), log it, wake waiters."""
        vm = await self.db(self.repo.transition, vm_id, target, reason, **fields)
        log.info("VM %s -> %s: %s", vm_id, target, reason)
        await self.notify()
        return vm

    async def update(self, vm_id: str, reason: str | None = None, **fields: Any) -> Vm:
        """Set fields without a state change (``reason`` goes to the event log); wake waiters."""
        vm = await self.db(self.repo.update, vm_id, reason, **fields)
        await self.notify()
        return vm

    async def event(self, vm_id: str, reason: str) -> None:
        """Write a line to the VM's event log."""
        await self.db(self.repo.add_event, vm_id, reason)

    # ----- changes ---------------------------------------------------------------------

    async def notify(self) -> None:
        """Wake every :meth:`wait_changed`."""
        async with self._changed:
            self._changed.notify_all()

    async def wait_changed(self, timeout: float) -> None:
        """Return at the next VM change, or after ``timeout`` seconds."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=timeout)

    async def usage(self) -> dict[str, tuple[int, int, int]]:
        """Per host URI: ``(vcpus, memory_mib, vm_count)`` held by non-terminal VMs."""
        usage: dict[str, tuple[int, int, int]] = {}
        for vm in await self.db(self.repo.active_on_hosts):
            if vm.host_uri is None:
                continue
            cpus, mem, count = usage.get(vm.host_uri, (0, 0, 0))
            usage[vm.host_uri] = (cpus + vm.vcpus, mem + vm.memory_mib, count + 1)
        return usage
