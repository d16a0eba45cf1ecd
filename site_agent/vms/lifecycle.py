"""The VM lifecycle of a site: one facade (:class:`VmManager`) over one module per job.

==========================  ===============================================
``vms/runtime.py``          rows, hosts, locks, background tasks, waiters
``vms/admission.py``        create: validate, choose a host, reserve, store
``vms/provisioning.py``     prolog and boot; cleanup of a failed create
``vms/readiness.py``        the console's readiness line; ``?wait=``
``vms/power.py``            stop (and save as image), kill, reboot
``vms/hotplug.py``          disks plugged into running VMs
``vms/reconcile.py``        database and hypervisors made to agree; monitor
``vms/devices.py``          NIC, leases and extra disks at create/boot/end
==========================  ===============================================

Guarantees (details in each module):

* a create that fails leaves no domain and no files behind (the VM row
  stays, in ``failed``, with the reason);
* a kill always frees the host: the domain is destroyed and undefined, the
  VM's files go to quarantine;
* after an agent restart :meth:`VmManager.reconcile` makes the database and
  the hypervisors agree;
* a stop that asked to save the root disk as an image is never silently
  dropped: a kill is refused while the save is pending (unless forced, which
  the event log records), and a stop interrupted by an agent restart still
  saves the disk.

The facade's methods are what the API calls: they take the caller's
:class:`~auth.principal.Principal` and return the shapes of
:mod:`core.resources.vms` (rows never leave the VM package).
"""

from __future__ import annotations

import asyncio

from auth.principal import Principal
from core.resources.images import SaveAs
from core.resources.vms import ConsoleOutput, VmCreate, VmEventPublic, VmPublic
from core.resources.volumes import VmDisk
from site_agent.config import VmPolicy
from site_agent.host_pool import HostPool
from site_agent.images.cache import ImageCache
from site_agent.layout import StateLayout
from site_agent.networks.service import NetworkService
from site_agent.quarantine import Quarantine
from site_agent.vms.admission import Admission
from site_agent.vms.console import read_tail
from site_agent.vms.devices import VmDevices
from site_agent.vms.hotplug import Hotplug
from site_agent.vms.power import Power
from site_agent.vms.provisioning import Provisioner
from site_agent.vms.readiness import Readiness
from site_agent.vms.reconcile import Reconciler
from site_agent.vms.repository import VmRepository
from site_agent.vms.runtime import VmRuntime
from site_agent.vms.views import event_public, vm_public
from site_agent.volumes.service import VolumeService


class VmManager:
    """Owns every VM of the site and the background tasks that drive them."""

    def __init__(
        self,
        repo: VmRepository,
        hosts: HostPool,
        images: ImageCache,
        layout: StateLayout,
        quarantine: Quarantine,
        policy: VmPolicy,
        *,
        networks: NetworkService,
        volumes: VolumeService,
    ) -> None:
        self.runtime = rt = VmRuntime(repo, hosts, layout, policy)
        self.readiness = Readiness(rt)
        devices = VmDevices(networks, volumes, images)
        self.provisioner = Provisioner(rt, images, devices, self.readiness)
        self.admission = Admission(rt, images, devices, self.provisioner)
        self.power = Power(rt, images, quarantine, devices, self.readiness)
        self.hotplug = Hotplug(rt, volumes, images)
        self.reconciler = Reconciler(
            rt,
            images=images,
            quarantine=quarantine,
            devices=devices,
            provisioner=self.provisioner,
            power=self.power,
            readiness=self.readiness,
        )

    # ----- reads ---------------------------------------------------------------------

    async def get(self, principal: Principal, vm_id: str) -> VmPublic:
        """A VM the caller may see (own, shared with their group, or any for admins); else 404."""
        return vm_public(await self.runtime.get_for(principal, vm_id))

    async def list_vms(
        self,
        principal: Principal,
        *,
        every_owner: bool = False,
        include_done: bool = True,
        via: str | None = None,
    ) -> list[VmPublic]:
        """The caller's VMs and those shared with the caller's groups, newest first.

        ``every_owner``: an admin gets everyone's (ignored for others);
        ``via``: only VMs a broker of that name created (delegated creates).
        """
        rt = self.runtime
        if every_owner and principal.is_admin:
            rows = await rt.db(rt.repo.list_vms, None, include_terminal=include_done, via=via)
        else:
            rows = await rt.db(
                rt.repo.list_vms,
                principal.account,
                include_terminal=include_done,
                groups=sorted(principal.groups),
                via=via,
            )
        return [vm_public(vm) for vm in rows]

    async def events(self, principal: Principal, vm_id: str) -> list[VmEventPublic]:
        """The event log of a VM the caller may see, oldest first."""
        vm = await self.runtime.get_for(principal, vm_id)
        return [event_public(e) for e in await self.runtime.db(self.runtime.repo.events, vm.id)]

    async def console(self, principal: Principal, vm_id: str, tail: int) -> ConsoleOutput:
        """The last ``tail`` bytes of the serial console (also while the VM is in quarantine)."""
        vm = await self.runtime.get_for(principal, vm_id)
        path = self.runtime.layout.readable_console_log(vm.id)
        text, truncated = await asyncio.to_thread(read_tail, path, tail)
        return ConsoleOutput(vm_id=vm.id, output=text, truncated=truncated)

    async def wait(
        self, principal: Principal, vm_id: str, condition: str, timeout: float
    ) -> VmPublic:
        """The VM once ``running``/``ready`` or terminal, or when ``timeout`` passes."""
        return vm_public(await self.readiness.wait_for(principal, vm_id, condition, timeout))

    async def usage(self) -> dict[str, tuple[int, int, int]]:
        """Per host URI: ``(vcpus, memory_mib, vm_count)`` held by non-terminal VMs."""
        return await self.runtime.usage()

    # ----- operations ------------------------------------------------------------------

    async def create(
        self, principal: Principal, request: VmCreate, idempotency_key: str | None = None
    ) -> list[VmPublic]:
        """Admit a create (``site_agent.vms.admission``); the VMs are ``pending``."""
        vms = await self.admission.create(principal, request, idempotency_key)
        return [vm_public(vm) for vm in vms]

    async def stop(self, principal: Principal, vm_id: str, save: SaveAs | None = None) -> VmPublic:
        return vm_public(await self.power.stop(principal, vm_id, save))

    async def kill(self, principal: Principal, vm_id: str, *, force: bool = False) -> VmPublic:
        return vm_public(await self.power.kill(principal, vm_id, force=force))

    async def reboot(self, principal: Principal, vm_id: str) -> VmPublic:
        return vm_public(await self.power.reboot(principal, vm_id))

    async def disks(self, principal: Principal, vm_id: str) -> list[VmDisk]:
        return await self.hotplug.disks_for(principal, vm_id)

    async def attach_disk(
        self,
        principal: Principal,
        vm_id: str,
        *,
        volume_id: str | None = None,
        image: str | None = None,
        readonly: bool = False,
    ) -> VmDisk:
        return await self.hotplug.attach(
            principal, vm_id, volume_id=volume_id, image=image, readonly=readonly
        )

    async def detach_disk(
        self,
        principal: Principal,
        vm_id: str,
        *,
        device: str | None = None,
        volume_id: str | None = None,
    ) -> VmDisk:
        return await self.hotplug.detach(principal, vm_id, device=device, volume_id=volume_id)

    async def detach_volume(
        self, principal: Principal, volume_id: str, vm_id: str | None = None
    ) -> VmDisk:
        return await self.hotplug.detach_volume(principal, volume_id, vm_id)

    # ----- background ----------------------------------------------------------------

    async def reconcile(self) -> list[str]:
        """One reconciliation round (``site_agent.vms.reconcile``); what was done."""
        return await self.reconciler.reconcile()

    async def run_monitor(self, interval: float) -> None:
        await self.reconciler.run_monitor(interval)

    async def close(self) -> None:
        """Cancel background tasks (VM state stays as recorded; reconcile fixes it on restart)."""
        await self.runtime.close()
