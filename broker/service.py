"""The broker: a small facade over its services, and its background work.

:class:`Broker` holds one service per job, all sharing one
:class:`~broker.runtime.Runtime`:

* ``creator`` (:mod:`broker.vms.create`) with ``placement``
  (:mod:`broker.vms.placing`) and ``queue`` (:mod:`broker.vms.queueing`);
* ``reader`` (:mod:`broker.vms.reading`): show, list, sync;
* ``operations`` (:mod:`broker.vms.operations`): kill, stop, reboot,
  console, events, disks;
* ``sweeper`` (:mod:`broker.vms.sweeper`): the orphan sweep;
* ``sites`` (:mod:`broker.sites.service`), ``volumes``, ``networks``, ``images``.

:meth:`Broker.start` restores the sites' last heartbeats and the queue from
the database and settles creates a restart interrupted;
:meth:`Broker.start_background` runs the monitor (sites that went silent,
the queue) and the orphan sweep, each in its own task, until
:meth:`Broker.close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from broker.images.service import ImageService
from broker.networks.service import NetworkService
from broker.runtime import Runtime, db
from broker.sites.service import SiteService
from broker.vms.create import VmCreator
from broker.vms.operations import VmOperations
from broker.vms.placing import VmPlacement
from broker.vms.queueing import VmQueue
from broker.vms.reading import VmReader
from broker.vms.sweeper import OrphanSweeper
from broker.volumes.service import VolumeService

log = logging.getLogger(__name__)


class Broker:
    """One API over the federation's sites and public clouds (see the module docstring)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.queue = VmQueue(rt)
        self.placement = VmPlacement(rt)
        self.creator = VmCreator(rt, self.placement, self.queue)
        self.reader = VmReader(rt)
        self.operations = VmOperations(rt, self.reader, self.queue)
        self.sweeper = OrphanSweeper(rt)
        self.sites = SiteService(rt)
        self.volumes = VolumeService(rt)
        self.networks = NetworkService(rt)
        self.images = ImageService(rt)
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Restore sites and the queue from the database; settle interrupted creates."""
        self.rt.registry.load(await db(self.rt.sites.reports))
        queued = await self.queue.restore()
        failed = await self.creator.settle_interrupted()
        log.info("broker started: %d queued request(s) restored, %d interrupted", queued, failed)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start_background(self) -> None:
        """Start the monitor and the orphan sweep (stopped by :meth:`close`)."""
        self._spawn(self.run_monitor())
        self._spawn(self.run_sweeper())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def drain_queue(self) -> None:
        """Start the queued VMs that fit now (each in its own task)."""
        for item, decision, user in await self.queue.drain():
            self._spawn(self.creator.start_queued(item, decision, user))

    async def run_monitor(self) -> None:
        """Forever: note sites that went silent, expire and start queued requests.

        Woken early by heartbeats and kills; the orphan sweep runs in its own
        task so a slow site never delays the queue.
        """
        interval = self.rt.config.broker.monitor_interval_seconds
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self.rt.wake.wait()
            self.rt.wake.clear()
            try:
                # Heartbeats another broker replica received (shared database).
                self.rt.registry.refresh(await db(self.rt.sites.reports))
                await self.sites.note_outages()
                await self.drain_queue()
            except Exception:
                log.exception("broker monitor pass failed")

    async def run_sweeper(self) -> None:
        """Forever: the orphan sweep every ``orphan_sweep_interval_seconds``."""
        while True:
            await asyncio.sleep(self.rt.config.broker.orphan_sweep_interval_seconds)
            try:
                await self.sweeper.sweep()
            except Exception:
                log.exception("orphan sweep failed")
