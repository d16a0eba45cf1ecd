"""A peer Stratus site as a :class:`ComputeProvider`, over the typed site API client.

:class:`PeerSiteProvider` offers every operation of the contract: the site
agent has them all. It is a thin layer over
:class:`~federation.providers.site_api.SiteApi`, which sends the requests
and maps the site's errors once; here only the contract's own semantics
are added:

* a VM's state goes through :data:`core.vm_state.SITE_STATE_MAP` (a state
  that is not a site state reads ``unknown``); what only a site knows
  (``host``, ``network``, ``address``, ``mac``, ``owner``, ``group``,
  ``via``, ``ip``, ``updated_at``) goes into ``ProviderVM.extra``;
* killing or deleting something the site does not know succeeds (``kill_vm``
  returns None);
* ``list_vms`` leaves out ``done`` VMs unless asked.

Users: :meth:`PeerSiteProvider.acting_for` returns the provider over
``api.as_user(user)``: the site then creates, shows and lists as that user
(delegated requests) and records the real owner. Without a delegation
signer the provider cannot act for anyone but the broker's account:
``knows_users`` is then False and ``acting_for`` returns the provider itself.

The federation's own view (``acting_for(None)``, the broker's token):
``list_vms`` lists the broker account's VMs and, when ``broker`` (the
broker's name) is given, also every VM the broker created at the site for
its users (``GET /vms?all=true&via=<broker>``; the broker's account at the
site needs the site-admin role for that): what an orphan sweep needs.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Literal

from auth.delegation import DelegatedUser
from core.resources.images import ImageDeleted, ImagePublic, ImageRegister, SaveAs
from core.resources.networks import NetworkDetail, NetworkPublic
from core.resources.vms import ConsoleOutput, VmEventPublic, VmListQuery, VmPublic
from core.resources.volumes import (
    DiskAttach,
    VmDisk,
    VolumeAttach,
    VolumeCreate,
    VolumeDetach,
    VolumeListQuery,
    VolumePublic,
    VolumeUpdate,
)
from core.vm_state import SITE_STATE_MAP, VmState, parse_state
from federation.errors import ProviderNotFound
from federation.providers.base import (
    ComputeProvider,
    Operation,
    ProviderVM,
    VMCreateRequest,
    WaitFor,
)
from federation.providers.site_api import SiteApi

#: The longest a site holds one ``?wait=`` answer (``VmShowQuery.timeout``), seconds.
MAX_WAIT = 600.0

#: ``VmPublic`` fields that only a site has: kept in ``ProviderVM.extra``.
SITE_EXTRA_FIELDS = ("host", "network", "address", "mac", "owner", "group", "via", "ip")


def provider_vm(site: str, vm: VmPublic) -> ProviderVM:
    """The contract's view of a site's VM resource."""
    extra: dict[str, Any] = {k: getattr(vm, k) for k in SITE_EXTRA_FIELDS}
    extra["updated_at"] = vm.updated_at
    addresses = tuple(dict.fromkeys(a for a in (vm.ip, vm.address) if a and a != "none"))
    return ProviderVM(
        site=site,
        provider_id=vm.id,
        name=vm.name,
        state=parse_state(vm.state.value, SITE_STATE_MAP),
        state_reason=vm.state_reason,
        ready=vm.ready,
        image=vm.image,
        instance_type=vm.instance_type,
        vcpus=vm.vcpus,
        memory_mib=vm.memory_mib,
        addresses=addresses,
        raw_state=vm.state.value,
        created_at=vm.created_at,
        extra=extra,
    )


class PeerSiteProvider(ComputeProvider):
    """A peer site (see the module docstring); ``name`` is the site's name.

    ``api`` is the site's client (as the broker's account, or as a user);
    ``broker`` the broker's name at the sites (enables the federation-wide
    listing described above).
    """

    kind = "site"
    operations = frozenset(Operation)

    def __init__(self, name: str, api: SiteApi, *, broker: str | None = None) -> None:
        self.name = name
        self.api = api
        self.broker = broker

    @property
    def knows_users(self) -> bool:  # type: ignore[override]
        """True when the site client can sign delegated requests."""
        return self.api.can_delegate

    def acting_for(self, user: DelegatedUser | None) -> ComputeProvider:
        if not self.api.can_delegate:
            return self
        return PeerSiteProvider(self.name, self.api.as_user(user), broker=self.broker)

    def _vm(self, vm: VmPublic) -> ProviderVM:
        return provider_vm(self.name, vm)

    # --- required ---------------------------------------------------------------------

    async def create_vm(self, request: VMCreateRequest) -> ProviderVM:
        (vm, *_) = await self.api.create_vm(request.spec, idempotency_key=request.idempotency_key)
        return replace(self._vm(vm), vm_id=request.vm_id, idempotency_key=request.idempotency_key)

    async def get_vm(self, provider_id: str) -> ProviderVM:
        return self._vm(await self.api.get_vm(provider_id))

    async def list_vms(self, *, include_done: bool = False) -> list[ProviderVM]:
        query = VmListQuery(include_done=include_done)
        vms = await self.api.list_vms(query)
        if self.broker is not None and self.api.user is None:
            ids = {vm.id for vm in vms}
            every = VmListQuery(all=True, include_done=include_done)
            vms += [v for v in await self.api.list_vms(every, via=self.broker) if v.id not in ids]
        found = [self._vm(vm) for vm in vms]
        if include_done:
            return found
        return [vm for vm in found if vm.state is not VmState.DONE]

    async def kill_vm(self, provider_id: str, *, force: bool = False) -> ProviderVM | None:
        try:
            return self._vm(await self.api.kill_vm(provider_id, force=force))
        except ProviderNotFound:
            return None

    # --- VM operations ----------------------------------------------------------------

    async def stop_vm(self, provider_id: str, *, save: SaveAs | None = None) -> ProviderVM:
        return self._vm(await self.api.stop_vm(provider_id, save=save))

    async def reboot_vm(self, provider_id: str) -> ProviderVM:
        return self._vm(await self.api.reboot_vm(provider_id))

    async def wait_vm(self, provider_id: str, until: WaitFor, timeout: float) -> ProviderVM:
        # The site holds one answer at most MAX_WAIT seconds: longer waits take several.
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return self._vm(await self.api.get_vm(provider_id))
            vm = await self.api.get_vm(provider_id, wait=until, timeout=min(left, MAX_WAIT))
            reached = vm.ready if until == "ready" else vm.state is VmState.RUNNING
            if reached or vm.state.is_terminal or left <= MAX_WAIT:
                return self._vm(vm)

    async def console(self, provider_id: str, *, tail: int) -> ConsoleOutput:
        return await self.api.console(provider_id, tail=tail)

    async def events(self, provider_id: str) -> list[VmEventPublic]:
        return await self.api.events(provider_id)

    async def vm_disks(self, provider_id: str) -> list[VmDisk]:
        return await self.api.vm_disks(provider_id)

    async def attach_disk(self, provider_id: str, disk: DiskAttach) -> VmDisk:
        return await self.api.attach_disk(provider_id, disk)

    async def detach_disk(self, provider_id: str, device: str) -> VmDisk:
        return await self.api.detach_disk(provider_id, device)

    # --- volumes ----------------------------------------------------------------------

    async def create_volume(self, body: VolumeCreate, *, idempotency_key: str) -> VolumePublic:
        return await self.api.create_volume(body, idempotency_key=idempotency_key)

    async def get_volume(
        self, volume_id: str, *, wait: Literal["ready"] | None = None, timeout: float = 0.0
    ) -> VolumePublic:
        if wait is None or timeout <= 0:
            return await self.api.get_volume(volume_id)
        return await self.api.get_volume(volume_id, wait=wait, timeout=min(timeout, MAX_WAIT))

    async def list_volumes(self, query: VolumeListQuery) -> list[VolumePublic]:
        return await self.api.list_volumes(query)

    async def update_volume(self, volume_id: str, changes: VolumeUpdate) -> VolumePublic:
        return await self.api.update_volume(volume_id, changes)

    async def delete_volume(self, volume_id: str) -> None:
        try:
            await self.api.delete_volume(volume_id)
        except ProviderNotFound:
            return

    async def attach_volume(self, volume_id: str, body: VolumeAttach) -> VmDisk:
        return await self.api.attach_volume(volume_id, body)

    async def detach_volume(self, volume_id: str, body: VolumeDetach) -> VmDisk:
        return await self.api.detach_volume(volume_id, body)

    # --- networks and images ----------------------------------------------------------

    async def list_networks(self) -> list[NetworkPublic]:
        return await self.api.list_networks()

    async def get_network(self, name: str) -> NetworkDetail:
        return await self.api.get_network(name)

    async def list_images(self) -> list[ImagePublic]:
        return await self.api.list_images()

    async def get_image(self, name: str) -> ImagePublic:
        return await self.api.get_image(name)

    async def register_image(self, body: ImageRegister) -> ImagePublic:
        return await self.api.register_image(body)

    async def delete_image(self, name: str) -> ImageDeleted:
        return await self.api.delete_image(name)
