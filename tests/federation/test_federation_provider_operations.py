"""The contract's optional operations, each run on every provider that declares it.

Providers and cases: ``contract_cases.py``. Which provider runs which test is
read from the classes' ``operations`` (``kinds_with``), so a provider that
starts declaring an operation is tested for it at once.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from core.resources.images import ImageRegister, SaveAs
from core.resources.volumes import (
    DiskAttach,
    VolumeAttach,
    VolumeCreate,
    VolumeDetach,
    VolumeListQuery,
    VolumeUpdate,
)
from core.vm_state import VmState
from federation.errors import ProviderNotFound, SiteRefused
from federation.providers.base import Operation, ProviderVM
from tests.federation.contract_cases import Case, kinds_with


async def running_vm(case: Case, **spec: object) -> ProviderVM:
    """A VM that is running (waited for where the provider can wait)."""
    vm = await case.provider.create_vm(case.request(**spec))
    if case.provider.supports(Operation.WAIT):
        vm = await case.provider.wait_vm(vm.provider_id, "ready", 10.0)
    assert vm.state is VmState.RUNNING, vm
    return vm


async def settled(case: Case, provider_id: str, seconds: float = 10.0) -> ProviderVM:
    """The VM once it is no longer running or shutting down (or as it is after ``seconds``)."""
    deadline = time.monotonic() + seconds
    while True:
        vm = await case.provider.get_vm(provider_id)
        if vm.state not in (VmState.RUNNING, VmState.SHUTDOWN) or time.monotonic() > deadline:
            return vm
        await asyncio.sleep(0.05)


# --- wait, stop, reboot, console, events ---------------------------------------------------


@pytest.mark.parametrize("case", kinds_with(Operation.WAIT), indirect=True)
async def test_wait_until_running_and_ready(case: Case) -> None:
    vm = await case.provider.create_vm(case.request())
    running = await case.provider.wait_vm(vm.provider_id, "running", 10.0)
    assert running.state is VmState.RUNNING
    ready = await case.provider.wait_vm(vm.provider_id, "ready", 10.0)
    assert ready.state is VmState.RUNNING and ready.ready
    with pytest.raises(ProviderNotFound):
        await case.provider.wait_vm(case.missing_id, "running", 1.0)


@pytest.mark.parametrize("case", kinds_with(Operation.WAIT), indirect=True)
async def test_wait_returns_at_once_for_a_terminal_vm(case: Case) -> None:
    vm = await case.provider.create_vm(case.request())
    await case.provider.kill_vm(vm.provider_id)
    started = time.monotonic()
    gone = await case.provider.wait_vm(vm.provider_id, "ready", 30.0)
    assert gone.state in (VmState.DONE, VmState.SHUTDOWN)
    assert time.monotonic() - started < 15


@pytest.mark.parametrize("case", kinds_with(Operation.STOP), indirect=True)
async def test_stop_shuts_the_vm_down(case: Case) -> None:
    vm = await running_vm(case)
    stopped = await case.provider.stop_vm(vm.provider_id)
    assert stopped.provider_id == vm.provider_id
    assert stopped.state in (VmState.SHUTDOWN, VmState.STOPPED, VmState.DONE)
    after = await settled(case, vm.provider_id)
    assert after.state in (VmState.STOPPED, VmState.DONE)
    assert not after.ready


@pytest.mark.parametrize("case", kinds_with(Operation.STOP), indirect=True)
async def test_stop_of_a_vm_that_is_not_running_is_refused(case: Case) -> None:
    vm = await case.provider.create_vm(case.request())
    await case.provider.kill_vm(vm.provider_id)
    with pytest.raises(SiteRefused) as info:
        await case.provider.stop_vm(vm.provider_id)
    assert (info.value.status, info.value.code) == (409, "invalid_state")
    with pytest.raises(ProviderNotFound):
        await case.provider.stop_vm(case.missing_id)


@pytest.mark.parametrize(
    "case", sorted(set(kinds_with(Operation.STOP)) & set(kinds_with(Operation.IMAGES))),
    indirect=True,
)  # fmt: skip
async def test_stop_with_save_makes_an_image(case: Case) -> None:
    vm = await running_vm(case)
    await case.provider.stop_vm(vm.provider_id, save=SaveAs(name="saved-disk"))
    await settled(case, vm.provider_id)
    deadline = time.monotonic() + 10
    while True:
        try:
            saved = await case.provider.get_image("saved-disk")
        except ProviderNotFound:
            assert time.monotonic() < deadline, "the saved image never appeared"
            await asyncio.sleep(0.05)
            continue
        break
    assert saved.origin_vm == vm.provider_id and saved.base_image == case.image


@pytest.mark.parametrize("case", ["cloud"], indirect=True)
async def test_a_cloud_refuses_to_save_a_disk_and_stops_nothing(case: Case) -> None:
    vm = await running_vm(case)
    with pytest.raises(SiteRefused) as info:
        await case.provider.stop_vm(vm.provider_id, save=SaveAs(name="saved"))
    assert (info.value.status, info.value.code) == (422, "not_supported_by_cloud")
    assert (await case.provider.get_vm(vm.provider_id)).state is VmState.RUNNING


@pytest.mark.parametrize("case", kinds_with(Operation.REBOOT), indirect=True)
async def test_reboot_keeps_the_vm_running(case: Case) -> None:
    vm = await running_vm(case)
    rebooted = await case.provider.reboot_vm(vm.provider_id)
    assert rebooted.provider_id == vm.provider_id
    assert rebooted.state is VmState.RUNNING
    if case.provider.supports(Operation.CONSOLE) and case.kind != "cloud":
        # Sites (and the fake) print a reset line and a new readiness line.
        await case.provider.wait_vm(vm.provider_id, "ready", 10.0)
        text = (await case.provider.console(vm.provider_id, tail=4096)).output
        assert "[fake] reset" in text
        assert text.count("STRATUS-READY") == 2
    await case.provider.kill_vm(vm.provider_id)
    with pytest.raises(SiteRefused) as info:
        await case.provider.reboot_vm(vm.provider_id)
    assert info.value.code == "invalid_state"


@pytest.mark.parametrize("case", kinds_with(Operation.CONSOLE), indirect=True)
async def test_console_returns_the_tail(case: Case) -> None:
    vm = await running_vm(case)
    whole = await case.provider.console(vm.provider_id, tail=1024 * 1024)
    assert whole.vm_id == vm.provider_id
    assert whole.output and not whole.truncated
    tail = await case.provider.console(vm.provider_id, tail=5)
    assert tail.truncated and len(tail.output.encode()) <= 5
    assert whole.output.endswith(tail.output)
    with pytest.raises(ProviderNotFound):
        await case.provider.console(case.missing_id, tail=10)


@pytest.mark.parametrize("case", kinds_with(Operation.EVENTS), indirect=True)
async def test_events_record_every_transition_oldest_first(case: Case) -> None:
    vm = await running_vm(case)
    await case.provider.kill_vm(vm.provider_id)
    events = await case.provider.events(vm.provider_id)
    assert events == sorted(events, key=lambda e: e.at)
    states = [e.to_state for e in events if e.to_state is not None]
    assert states[0] is VmState.PENDING
    assert VmState.RUNNING in states and states[-1] is VmState.DONE
    assert all(e.reason for e in events)


# --- disks and volumes ----------------------------------------------------------------------


@pytest.mark.parametrize("case", kinds_with(Operation.VOLUMES), indirect=True)
async def test_volume_lifecycle(case: Case) -> None:
    p = case.provider
    body = VolumeCreate(size_gib=1, tag="data-1")
    volume = await p.create_volume(body, idempotency_key="vol-key")
    assert (await p.create_volume(body, idempotency_key="vol-key")).id == volume.id
    with pytest.raises(SiteRefused) as info:
        await p.create_volume(VolumeCreate(size_gib=2), idempotency_key="vol-key")
    assert (info.value.status, info.value.code) == (409, "idempotency_key_reused")
    assert (await p.get_volume(volume.id)).size_gib == 1
    assert (await p.get_volume(volume.id, wait="ready", timeout=5)).state == "ready"
    other = await p.create_volume(VolumeCreate(size_gib=1, tag="logs"), idempotency_key="k2")
    found = await p.list_volumes(VolumeListQuery(tag="^data"))
    assert [v.id for v in found] == [volume.id]
    changed = await p.update_volume(volume.id, VolumeUpdate(tag="data-2", visibility="public"))
    assert (changed.tag, changed.visibility) == ("data-2", "public")
    cow = await p.create_volume(VolumeCreate(cow_of=volume.id), idempotency_key="k3")
    assert (cow.cow_of, cow.size_gib) == (volume.id, 1)
    for made in (cow, other):
        await p.delete_volume(made.id)
        await p.delete_volume(made.id)  # deleting a missing volume succeeds
        with pytest.raises(ProviderNotFound):
            await p.get_volume(made.id)


@pytest.mark.parametrize("case", kinds_with(Operation.VOLUMES), indirect=True)
async def test_volume_attach_and_detach(case: Case) -> None:
    p = case.provider
    vm = await running_vm(case)
    volume = await p.create_volume(VolumeCreate(size_gib=1), idempotency_key="attach-me")
    disk = await p.attach_volume(volume.id, VolumeAttach(vm_id=vm.provider_id))
    assert (disk.vm_id, disk.kind, disk.volume_id) == (vm.provider_id, "volume", volume.id)
    shown = await p.get_volume(volume.id)
    assert shown.attached == 1 and shown.attachments[0].device == disk.device
    with pytest.raises(SiteRefused) as info:
        await p.delete_volume(volume.id)
    assert info.value.status == 409
    detached = await p.detach_volume(volume.id, VolumeDetach(vm_id=vm.provider_id))
    assert detached.device == disk.device
    assert (await p.get_volume(volume.id)).attached == 0
    with pytest.raises(SiteRefused) as info:
        await p.detach_volume(volume.id, VolumeDetach())
    assert info.value.code == "not_attached"
    await p.delete_volume(volume.id)


@pytest.mark.parametrize(
    "case", sorted(set(kinds_with(Operation.DISKS)) & set(kinds_with(Operation.VOLUMES))),
    indirect=True,
)  # fmt: skip
async def test_disks_hot_plug_and_create_with_volumes(case: Case) -> None:
    p = case.provider
    volume = await p.create_volume(VolumeCreate(size_gib=1), idempotency_key="boot-vol")
    shared = await p.create_volume(VolumeCreate(size_gib=1), idempotency_key="ro-vol")
    vm = await running_vm(case, volumes=[volume.id], readonly_volumes=[shared.id])
    disks = await p.vm_disks(vm.provider_id)
    assert {(d.volume_id, d.readonly) for d in disks} == {(volume.id, False), (shared.id, True)}
    static = await p.attach_disk(vm.provider_id, DiskAttach(static_disk=case.image))
    assert (static.kind, static.image, static.readonly) == ("static", case.image, True)
    assert len(await p.vm_disks(vm.provider_id)) == 3
    gone = await p.detach_disk(vm.provider_id, static.device)
    assert gone.device == static.device
    assert static.device not in {d.device for d in await p.vm_disks(vm.provider_id)}
    with pytest.raises((ProviderNotFound, SiteRefused)):
        await p.detach_disk(vm.provider_id, static.device)


@pytest.mark.parametrize("case", kinds_with(Operation.VOLUMES), indirect=True)
async def test_create_with_an_unknown_volume_is_refused_and_leaves_nothing(case: Case) -> None:
    missing = "00000000-0000-4000-8000-00000000abcd"
    with pytest.raises(SiteRefused) as info:
        await case.provider.create_vm(case.request(volumes=[missing]))
    assert info.value.status == 422
    assert await case.backend_live_count() == 0


# --- networks and images --------------------------------------------------------------------


@pytest.mark.parametrize("case", kinds_with(Operation.NETWORKS), indirect=True)
async def test_networks_and_a_create_on_a_named_pool_with_an_address(case: Case) -> None:
    assert case.pool is not None
    name, kind, cidr = case.pool
    pools = await case.provider.list_networks()
    assert [(n.name, n.type.value, n.cidr) for n in pools] == [(name, kind, cidr)]
    free = pools[0].free
    address = cidr.rsplit(".", 1)[0] + ".77"
    vm = await case.provider.create_vm(case.request(network=name, address=address))
    assert (vm.extra["network"], vm.extra["address"]) == (name, address)
    detail = await case.provider.get_network(name)
    assert detail.free == free - 1
    assert [(lease.address, lease.vm_id) for lease in detail.leases] == [(address, vm.provider_id)]
    with pytest.raises(ProviderNotFound):
        await case.provider.get_network("nowhere")
    with pytest.raises(SiteRefused) as info:
        await case.provider.create_vm(case.request(network=name, address="203.0.113.5"))
    assert info.value.status == 422
    with pytest.raises(SiteRefused) as info:
        await case.provider.create_vm(case.request(network=name, address=address))
    assert (info.value.status, info.value.code) == (409, "address_in_use")
    with pytest.raises(SiteRefused) as info:
        await case.provider.create_vm(case.request(network="nowhere"))
    assert info.value.status == 422
    assert await case.backend_live_count() == 1


@pytest.mark.parametrize("case", kinds_with(Operation.IMAGES), indirect=True)
async def test_images_register_show_delete(case: Case) -> None:
    p = case.provider
    assert case.image in {i.name for i in await p.list_images()}
    body = ImageRegister(
        name="registered", url="https://images.example/r.qcow2", size=1024, sha1="a" * 40
    )
    image = await p.register_image(body)
    assert (image.name, image.state.value) == ("registered", "pending")
    assert (await p.get_image("registered")).url == body.url
    with pytest.raises(SiteRefused) as info:
        await p.register_image(body)
    assert (info.value.status, info.value.code) == (409, "image_exists")
    deleted = await p.delete_image("registered")
    assert deleted.name == "registered"
    with pytest.raises(ProviderNotFound):
        await p.get_image("registered")
    with pytest.raises(SiteRefused) as info:
        await p.delete_image(case.image)  # configured at the site: never deleted
    assert info.value.status in (403, 409)
