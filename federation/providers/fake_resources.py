"""Volumes, disks, address pools and images of the fake provider, with a site's rules.

Functions over a :class:`~federation.providers.fake_world.FakeWorld`; each
takes ``owner`` (who acts: an account, or ``FEDERATION``) and ``viewer``
(whose resources are visible: the same account, or None for the federation,
which sees everything).
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address

from core.resources.images import (
    ImageDeleted,
    ImagePublic,
    ImageRegister,
    ImageSource,
    ImageState,
)
from core.resources.vms import VmCreate
from core.resources.volumes import (
    AttachmentPublic,
    DiskAttach,
    VmDisk,
    VolumeAttach,
    VolumeCreate,
    VolumeDetach,
    VolumeListQuery,
    VolumePublic,
    VolumeUpdate,
)
from federation.errors import ProviderNotFound, SiteRefused
from federation.providers.fake_world import (
    FakePool,
    FakeVm,
    FakeVolume,
    FakeWorld,
    digest,
    image,
    new_id,
    now,
)


def refuse(world: FakeWorld, message: str, status: int, code: str) -> SiteRefused:
    return SiteRefused(world.name, f"{message} ({code})", status=status, code=code)


def visible_volume(world: FakeWorld, volume_id: str, viewer: str | None) -> FakeVolume:
    """The volume if ``viewer`` may see it (theirs or public); else ``ProviderNotFound``."""
    volume = world.volumes.get(volume_id)
    if volume is None or not (
        viewer is None or volume.owner == viewer or volume.visibility == "public"
    ):
        raise ProviderNotFound(world.name, f"no volume with id {volume_id!r}")
    return volume


def own_volume(world: FakeWorld, volume_id: str, viewer: str | None) -> FakeVolume:
    """The volume if ``viewer`` may change it; 403 for someone else's public volume."""
    volume = visible_volume(world, volume_id, viewer)
    if viewer is not None and volume.owner != viewer:
        raise refuse(world, f"volume {volume_id} is not yours", 403, "forbidden")
    return volume


def create_volume(
    world: FakeWorld, body: VolumeCreate, key: str, owner: str, viewer: str | None
) -> VolumePublic:
    """Create a volume, or return the one an earlier request with ``key`` made."""
    hashed = digest(body.model_dump(mode="json"))
    known = world.volume_keys.get((owner, key))
    if known is not None:
        if known[0] != hashed:
            raise refuse(
                world,
                "this Idempotency-Key was used with a different request body",
                409,
                "idempotency_key_reused",
            )
        if known[1] in world.volumes:
            return world.volumes[known[1]].public(viewer, world.vms)
    size = body.size_gib
    origin = "empty"
    if body.cow_of is not None:
        source = visible_volume(world, body.cow_of, viewer)
        size = size or source.size_gib
        if size < source.size_gib:
            raise refuse(world, "size_gib is below the source volume's size", 422, "invalid")
        origin = "cow"
    elif body.image is not None:
        if body.image not in world.images:
            raise refuse(world, f"unknown image {body.image!r}", 422, "validation_failed")
        origin = "image"
    assert size is not None  # VolumeCreate requires it unless cow_of is given
    volume = FakeVolume(
        id=new_id(),
        owner=owner,
        tag=body.tag,
        visibility=body.visibility,
        size_gib=size,
        origin=origin,
        cow_of=body.cow_of,
        image=body.image,
    )
    world.volumes[volume.id] = volume
    world.volume_keys[(owner, key)] = (hashed, volume.id)
    return volume.public(viewer, world.vms)


def list_volumes(
    world: FakeWorld, query: VolumeListQuery, viewer: str | None
) -> list[VolumePublic]:
    """The viewer's volumes and public ones, filtered like ``GET /volumes``."""
    pattern = re.compile(query.tag) if query.tag is not None else None
    out = []
    for volume in world.volumes.values():
        if not (viewer is None or volume.owner == viewer or volume.visibility == "public"):
            continue
        if pattern is not None and not pattern.search(volume.tag):
            continue
        if query.visibility is not None and volume.visibility != query.visibility:
            continue
        if query.owner is not None and volume.owner != query.owner:
            continue
        out.append(volume.public(viewer, world.vms))
    return out


def update_volume(
    world: FakeWorld, volume_id: str, changes: VolumeUpdate, viewer: str | None
) -> VolumePublic:
    volume = own_volume(world, volume_id, viewer)
    if changes.tag is not None:
        volume.tag = changes.tag
    if changes.visibility is not None:
        volume.visibility = changes.visibility
    volume.updated_at = now()
    return volume.public(viewer, world.vms)


def delete_volume(world: FakeWorld, volume_id: str, viewer: str | None) -> None:
    """Delete; a missing volume is fine, an attached or copied-from one is refused (409)."""
    try:
        volume = own_volume(world, volume_id, viewer)
    except ProviderNotFound:
        return
    if volume.attachments:
        raise refuse(world, f"volume {volume_id} is attached", 409, "volume_in_use")
    if any(v.cow_of == volume_id for v in world.volumes.values()):
        raise refuse(world, f"volume {volume_id} has copy-on-write children", 409, "volume_in_use")
    del world.volumes[volume_id]


def check_volume_use(
    world: FakeWorld, volume_id: str, readonly: bool, viewer: str | None, field: str
) -> FakeVolume:
    """A volume a VM being created may use (422 when unknown, as a site answers)."""
    try:
        volume = visible_volume(world, volume_id, viewer)
    except ProviderNotFound as exc:
        raise refuse(world, f"{field}: no volume {volume_id}", 422, "validation_failed") from exc
    if not readonly and viewer is not None and volume.owner != viewer:
        raise refuse(world, f"volume {volume_id} is not yours", 403, "forbidden")
    if not readonly and volume.attachments:
        raise refuse(world, f"volume {volume_id} is attached elsewhere", 409, "volume_in_use")
    return volume


def plug(
    world: FakeWorld, vm: FakeVm, volume: FakeVolume | None, image: str | None, readonly: bool
) -> VmDisk:
    """Record a disk in ``vm`` (and the attachment in the volume)."""
    device = vm.next_device()
    disk = VmDisk(
        vm_id=vm.id,
        device=device,
        kind="volume" if volume is not None else "static",
        volume_id=volume.id if volume is not None else None,
        image=image,
        readonly=readonly or volume is None,
    )
    vm.disks[device] = disk
    if volume is not None:
        volume.attachments[vm.id] = AttachmentPublic(
            vm_id=vm.id, device=device, readonly=disk.readonly
        )
    return disk


def running(world: FakeWorld, vm: FakeVm, what: str) -> None:
    if vm.state.value != "running":
        raise refuse(
            world, f"VM {vm.id} is {vm.state}; only a running VM can {what}", 409, "invalid_state"
        )


def attach(world: FakeWorld, vm: FakeVm, disk: DiskAttach, viewer: str | None) -> VmDisk:
    """Hot-plug a volume or a static disk into a running VM."""
    running(world, vm, "take a disk")
    if disk.volume is not None:
        volume = visible_volume(world, disk.volume, viewer)
        if vm.id in volume.attachments:
            raise refuse(world, f"volume {volume.id} is already attached", 409, "volume_in_use")
        check_volume_use(world, volume.id, disk.readonly, viewer, "volume")
        return plug(world, vm, volume, None, disk.readonly)
    assert disk.static_disk is not None
    if disk.static_disk not in world.images:
        raise refuse(world, f"unknown image {disk.static_disk!r}", 422, "validation_failed")
    return plug(world, vm, None, disk.static_disk, True)


def detach(world: FakeWorld, vm: FakeVm, device: str) -> VmDisk:
    """Hot-unplug the disk at ``device``; ``ProviderNotFound`` if there is none."""
    running(world, vm, "give up a disk")
    disk = vm.disks.pop(device, None)
    if disk is None:
        raise ProviderNotFound(world.name, f"no disk {device!r} on VM {vm.id}")
    if disk.volume_id is not None and disk.volume_id in world.volumes:
        world.volumes[disk.volume_id].attachments.pop(vm.id, None)
    return disk


def attach_volume(
    world: FakeWorld, volume_id: str, body: VolumeAttach, vm: FakeVm, viewer: str | None
) -> VmDisk:
    return attach(world, vm, DiskAttach(volume=volume_id, readonly=body.readonly), viewer)


def detach_volume(
    world: FakeWorld, volume_id: str, body: VolumeDetach, viewer: str | None
) -> tuple[FakeVm, str]:
    """The VM and device of the volume's attachment a detach names (409 if none)."""
    volume = visible_volume(world, volume_id, viewer)
    mine = [
        a
        for a in volume.attachments.values()
        if (viewer is None or world.vms[a.vm_id].owner == viewer)
        and (body.vm_id is None or a.vm_id == body.vm_id)
    ]
    if len(mine) != 1:
        what = "to that VM" if body.vm_id else "to exactly one of your VMs"
        raise refuse(world, f"volume {volume_id} is not attached {what}", 409, "not_attached")
    return world.vms[mine[0].vm_id], mine[0].device


def pool_for(world: FakeWorld, spec: VmCreate) -> tuple[FakePool | None, str | None]:
    """The pool and address a create gets (checked; nothing is leased here)."""
    pools = world.pools
    if spec.network is None and not pools:
        if spec.address is not None:
            raise refuse(world, "this site has no address pool", 422, "validation_failed")
        return None, None
    if spec.network is not None and spec.network not in pools:
        raise refuse(world, f"unknown network {spec.network!r}", 422, "validation_failed")
    pool = pools[spec.network] if spec.network else next(iter(pools.values()))
    if spec.address is not None:
        if not pool.contains(IPv4Address(spec.address)):
            raise refuse(
                world,
                f"address {spec.address} is not in pool {pool.name} ({pool.cidr})",
                422,
                "validation_failed",
            )
        if str(spec.address) in pool.leases:
            raise refuse(world, f"address {spec.address} is in use", 409, "address_in_use")
        return pool, str(spec.address)
    free = pool.free()
    if not free:
        raise refuse(world, f"no free address in pool {pool.name}", 409, "no_free_address")
    return pool, free[0]


def register_image(world: FakeWorld, body: ImageRegister, viewer: str | None) -> ImagePublic:
    """Register an image (``pending``: a site fetches it on first use); users' are private."""
    if body.name in world.images:
        raise refuse(world, f"an image named {body.name!r} already exists", 409, "image_exists")
    if body.public and viewer is not None:
        raise refuse(world, "only site admins register public images", 403, "forbidden")
    registered = image(
        body.name,
        owner=viewer,
        public=body.public,
        source=ImageSource.URL,
        state=ImageState.PENDING,
        url=body.url,
        size=body.size,
        sha1=body.sha1,
        sha256=body.sha256,
        description=body.description,
    )
    world.images[body.name] = registered
    return registered


def delete_image(world: FakeWorld, found: ImagePublic, viewer: str | None) -> ImageDeleted:
    """Delete an image: its owner (or the federation), not a configured one, not in use."""
    name = found.name
    if viewer is not None and found.owner != viewer:
        raise refuse(world, f"image {name!r} is not yours", 403, "forbidden")
    if found.source is ImageSource.CONFIG:
        raise refuse(world, f"image {name!r} comes from the site config", 409, "image_configured")
    if world.image_in_use(name):
        raise refuse(world, f"image {name!r} is in use", 409, "image_in_use")
    del world.images[name]
    return ImageDeleted(name=name, freed_bytes=0)
