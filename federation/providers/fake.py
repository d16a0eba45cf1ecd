"""An in-memory :class:`ComputeProvider` with the same semantics as the real ones.

Used by the contract suite, by broker tests and for demos. THIS IS A FAKE:
nothing runs (``simulated = True``); a VM is a record that is ``running``
and ``ready`` as soon as it is made. Otherwise it behaves like a site: it
offers every optional operation, knows users (:meth:`FakeProvider.acting_for`:
each user sees and changes only their own VMs and volumes, the federation's
own view sees everything), and refuses what a site refuses with the site's
status and code (unknown image 422, no capacity 409, unknown pool 422, no
free address 409, an Idempotency-Key reused with another body 409...).

Failure injection: :meth:`FakeProvider.fail_next` makes the next calls (of
any method, through any view) raise the given errors, so failover and retry
paths can be driven without a network; ``calls`` counts calls per method.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from ipaddress import IPv4Address
from typing import Literal

from auth.delegation import DelegatedUser
from core.resources.images import (
    ImageDeleted,
    ImagePublic,
    ImageRegister,
    ImageSource,
    SaveAs,
)
from core.resources.networks import NetworkDetail, NetworkPublic, NetworkType
from core.resources.vms import ConsoleOutput, VmCreate, VmEventPublic
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
from core.vm_state import VmState
from federation.errors import ProviderError, ProviderNotFound, SiteFailed
from federation.providers import fake_resources as rules
from federation.providers.base import (
    ComputeProvider,
    Operation,
    ProviderVM,
    VMCreateRequest,
    WaitFor,
)
from federation.providers.fake_resources import refuse
from federation.providers.fake_world import (
    FEDERATION,
    FakePool,
    FakeVm,
    FakeWorld,
    digest,
    image,
    new_id,
    now,
)


class FakeProvider(ComputeProvider):
    """A simulated site in memory (see the module docstring).

    ``images``: images it can boot (None: any name); ``max_vms``: refuses
    beyond this many active VMs (None: no limit); ``networks``: address pools
    as ``(name, type, cidr)``, the first the default (none: VMs get no
    address, as at a site without pools); ``host_tags``: the tags of its one
    host (a create asking for others is refused).
    """

    kind = "site"
    operations = frozenset(Operation)
    knows_users = True
    simulated = True

    def __init__(
        self,
        name: str = "fake",
        *,
        images: Iterable[str] | None = None,
        max_vms: int | None = None,
        networks: Iterable[tuple[str, NetworkType | str, str]] = (),
        host_tags: Iterable[str] = (),
        _world: FakeWorld | None = None,
        _user: DelegatedUser | None = None,
    ) -> None:
        self.name = name
        self._world = _world or FakeWorld(
            name, images=images, max_vms=max_vms, networks=networks, host_tags=host_tags
        )
        self._user = _user
        #: Who acts (the owner of what is made); who is seen (None: everything).
        self._owner = _user.account if _user is not None else FEDERATION
        self._viewer = _user.account if _user is not None else None

    def acting_for(self, user: DelegatedUser | None) -> ComputeProvider:
        return FakeProvider(self.name, _world=self._world, _user=user)

    # --- test hooks ---------------------------------------------------------------------

    @property
    def calls(self) -> Counter[str]:
        """Calls per method name, through every view."""
        return self._world.calls

    @property
    def max_vms(self) -> int | None:
        return self._world.max_vms

    @max_vms.setter
    def max_vms(self, value: int | None) -> None:
        self._world.max_vms = value

    def fail_next(self, *errors: ProviderError) -> None:
        """Make the next calls (any method, any view) raise these errors, one per call."""
        self._world.failures.extend(errors)

    def fail_with(self, reason: str) -> SiteFailed:
        """A ``SiteFailed`` for this provider (sugar for :meth:`fail_next`)."""
        return SiteFailed(self.name, reason)

    # --- plumbing -----------------------------------------------------------------------

    def _visible(self, vm: FakeVm) -> bool:
        user = self._user
        return user is None or vm.owner == user.account or vm.group in user.groups

    def _find(self, provider_id: str) -> FakeVm:
        vm = self._world.vms.get(provider_id)
        if vm is None or not self._visible(vm):
            raise ProviderNotFound(self.name, f"no VM with id {provider_id!r}")
        return vm

    def _view(self, vm: FakeVm) -> ProviderVM:
        return vm.view(self.name)

    def _admit(self, spec: VmCreate) -> tuple[FakePool | None, str | None]:
        """Every check of a create, before anything is made (a refusal leaves nothing)."""
        world = self._world
        if not world.any_image and spec.image not in world.images:
            raise refuse(world, f"unknown image {spec.image!r}", 422, "validation_failed")
        if not set(spec.host_tags) <= world.host_tags:
            tags = ", ".join(sorted(spec.host_tags))
            raise refuse(world, f"no host can take the VM (tags {tags})", 409, "no_capacity")
        if world.max_vms is not None and world.active_vms() >= world.max_vms:
            raise refuse(world, "no host has room for the VM", 409, "no_capacity")
        user = self._user
        if spec.group is not None and user is not None and spec.group not in user.groups:
            raise refuse(world, f"you are not a member of group {spec.group!r}", 403, "forbidden")
        for volume_id in spec.volumes:
            rules.check_volume_use(world, volume_id, False, self._viewer, "volumes")
        for volume_id in spec.readonly_volumes:
            rules.check_volume_use(world, volume_id, True, self._viewer, "readonly_volumes")
        for name in spec.static_disks:
            if name not in world.images:
                raise refuse(
                    world, f"static_disks: unknown image {name!r}", 422, "validation_failed"
                )
        return rules.pool_for(world, spec)

    # --- required -----------------------------------------------------------------------

    async def create_vm(self, request: VMCreateRequest) -> ProviderVM:
        world = self._world
        world.call("create_vm")
        spec = request.spec
        hashed = digest(spec.model_dump(mode="json"))
        known = world.vm_keys.get((self._owner, request.idempotency_key))
        if known is not None:
            if known[0] != hashed:
                raise refuse(
                    world,
                    "this Idempotency-Key was used with a different request body",
                    409,
                    "idempotency_key_reused",
                )
            return self._view(world.vms[known[1]])
        pool, address = self._admit(spec)
        itype, vcpus, memory = spec.sizing()
        vm = FakeVm(
            id=new_id(),
            name=request.name,
            owner=self._owner,
            group=spec.group,
            image=spec.image,
            instance_type=itype,
            vcpus=vcpus,
            memory_mib=memory,
            vm_id=request.vm_id,
            idempotency_key=request.idempotency_key,
        )
        vm.events.append(
            VmEventPublic(at=vm.created_at, from_state=None, to_state=vm.state, reason="created")
        )
        if pool is not None and address is not None:
            vm.network, vm.address = pool.name, address
            vm.mac = "52:54:00:" + ":".join(f"{b:02x}" for b in IPv4Address(address).packed[1:])
            pool.leases[address] = (vm.id, vm.mac, vm.owner)
        world.vms[vm.id] = vm
        for volume_id in spec.volumes:
            rules.plug(world, vm, world.volumes[volume_id], None, False)
        for volume_id in spec.readonly_volumes:
            rules.plug(world, vm, world.volumes[volume_id], None, True)
        for name in spec.static_disks:
            rules.plug(world, vm, None, name, True)
        for state in (VmState.PROLOG, VmState.BOOT, VmState.RUNNING):
            vm.move(state, "simulated: nothing runs")
        self._boot(vm)
        world.vm_keys[(self._owner, request.idempotency_key)] = (hashed, vm.id)
        return self._view(vm)

    def _boot(self, vm: FakeVm) -> None:
        vm.ready = True
        vm.console += f"STRATUS-READY {vm.id} {vm.address or 'none'}\n"

    async def get_vm(self, provider_id: str) -> ProviderVM:
        self._world.call("get_vm")
        return self._view(self._find(provider_id))

    async def list_vms(self, *, include_done: bool = False) -> list[ProviderVM]:
        self._world.call("list_vms")
        return [
            self._view(vm)
            for vm in self._world.vms.values()
            if self._visible(vm) and (include_done or vm.state is not VmState.DONE)
        ]

    async def kill_vm(self, provider_id: str, *, force: bool = False) -> ProviderVM | None:
        self._world.call("kill_vm")
        try:
            vm = self._find(provider_id)
        except ProviderNotFound:
            return None
        if vm.state is not VmState.DONE:
            vm.move(VmState.DONE, "killed")
            vm.ready = False
            self._world.release(vm)
        return self._view(vm)

    # --- VM operations ------------------------------------------------------------------

    async def stop_vm(self, provider_id: str, *, save: SaveAs | None = None) -> ProviderVM:
        world = self._world
        world.call("stop_vm")
        vm = self._find(provider_id)
        rules.running(world, vm, "be stopped")
        if save is not None and save.name in world.images:
            taken = f"an image named {save.name!r} already exists at this site"
            raise refuse(world, taken, 409, "image_exists")
        vm.move(VmState.SHUTDOWN, "stop requested: ACPI shutdown sent")
        vm.move(VmState.DONE, "simulated: the guest powered off")
        vm.ready = False
        world.release(vm)
        if save is not None:
            world.images[save.name] = image(
                save.name,
                owner=vm.owner,
                public=False,
                source=ImageSource.SAVED,
                description=save.description,
                origin_vm=vm.id,
                base_image=vm.image,
            )
        return self._view(vm)

    async def reboot_vm(self, provider_id: str) -> ProviderVM:
        self._world.call("reboot_vm")
        vm = self._find(provider_id)
        rules.running(self._world, vm, "be rebooted")
        vm.events.append(
            VmEventPublic(at=now(), from_state=None, to_state=None, reason="rebooted (hard reset)")
        )
        vm.console += "[fake] reset\n"
        self._boot(vm)
        return self._view(vm)

    async def wait_vm(self, provider_id: str, until: WaitFor, timeout: float) -> ProviderVM:
        # A fake VM is running and ready from its creation: there is nothing to wait for.
        self._world.call("wait_vm")
        return self._view(self._find(provider_id))

    async def console(self, provider_id: str, *, tail: int) -> ConsoleOutput:
        self._world.call("console")
        vm = self._find(provider_id)
        data = vm.console.encode()
        text = data[-tail:].decode(errors="replace")
        return ConsoleOutput(vm_id=vm.id, output=text, truncated=len(data) > tail)

    async def events(self, provider_id: str) -> list[VmEventPublic]:
        self._world.call("events")
        return list(self._find(provider_id).events)

    async def vm_disks(self, provider_id: str) -> list[VmDisk]:
        self._world.call("vm_disks")
        return list(self._find(provider_id).disks.values())

    async def attach_disk(self, provider_id: str, disk: DiskAttach) -> VmDisk:
        self._world.call("attach_disk")
        return rules.attach(self._world, self._find(provider_id), disk, self._viewer)

    async def detach_disk(self, provider_id: str, device: str) -> VmDisk:
        self._world.call("detach_disk")
        return rules.detach(self._world, self._find(provider_id), device)

    # --- volumes ------------------------------------------------------------------------

    async def create_volume(self, body: VolumeCreate, *, idempotency_key: str) -> VolumePublic:
        self._world.call("create_volume")
        return rules.create_volume(self._world, body, idempotency_key, self._owner, self._viewer)

    async def get_volume(
        self, volume_id: str, *, wait: Literal["ready"] | None = None, timeout: float = 0.0
    ) -> VolumePublic:
        # Fake volumes are ready at once: ``wait`` has nothing to wait for.
        self._world.call("get_volume")
        volume = rules.visible_volume(self._world, volume_id, self._viewer)
        return volume.public(self._viewer, self._world.vms)

    async def list_volumes(self, query: VolumeListQuery) -> list[VolumePublic]:
        self._world.call("list_volumes")
        return rules.list_volumes(self._world, query, self._viewer)

    async def update_volume(self, volume_id: str, changes: VolumeUpdate) -> VolumePublic:
        self._world.call("update_volume")
        return rules.update_volume(self._world, volume_id, changes, self._viewer)

    async def delete_volume(self, volume_id: str) -> None:
        self._world.call("delete_volume")
        rules.delete_volume(self._world, volume_id, self._viewer)

    async def attach_volume(self, volume_id: str, body: VolumeAttach) -> VmDisk:
        self._world.call("attach_volume")
        vm = self._find(body.vm_id)
        return rules.attach_volume(self._world, volume_id, body, vm, self._viewer)

    async def detach_volume(self, volume_id: str, body: VolumeDetach) -> VmDisk:
        self._world.call("detach_volume")
        vm, device = rules.detach_volume(self._world, volume_id, body, self._viewer)
        return rules.detach(self._world, vm, device)

    # --- networks and images ------------------------------------------------------------

    async def list_networks(self) -> list[NetworkPublic]:
        self._world.call("list_networks")
        return [pool.public() for pool in self._world.pools.values()]

    async def get_network(self, name: str) -> NetworkDetail:
        self._world.call("get_network")
        pool = self._world.pools.get(name)
        if pool is None:
            raise ProviderNotFound(self.name, f"no network {name!r}")
        return pool.detail(self._viewer)

    def _image_visible(self, found: ImagePublic) -> bool:
        return self._viewer is None or found.public or found.owner == self._viewer

    async def list_images(self) -> list[ImagePublic]:
        self._world.call("list_images")
        return [i for i in self._world.images.values() if self._image_visible(i)]

    def _image(self, name: str) -> ImagePublic:
        found = self._world.images.get(name)
        if found is None or not self._image_visible(found):
            raise ProviderNotFound(self.name, f"no image named {name!r}")
        return found

    async def get_image(self, name: str) -> ImagePublic:
        self._world.call("get_image")
        return self._image(name)

    async def register_image(self, body: ImageRegister) -> ImagePublic:
        self._world.call("register_image")
        return rules.register_image(self._world, body, self._viewer)

    async def delete_image(self, name: str) -> ImageDeleted:
        self._world.call("delete_image")
        return rules.delete_image(self._world, self._image(name), self._viewer)
