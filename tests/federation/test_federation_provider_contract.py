"""One contract suite, run against every ComputeProvider: the fake, a real peer site over
HTTP (``SiteApi``), and the libcloud provider against ``moto_server``.

The semantics checked are those of the ``ComputeProvider`` docstring. The
static checks fail on a missing method: every abstract method implemented;
every method of a declared optional operation overridden; every method of an
undeclared one left to the base (which raises ``OperationNotSupported``).
The optional operations' own tests are in
``test_federation_provider_operations.py`` and run on the providers that
declare each operation.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from auth.delegation import DelegatedUser
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
from federation.errors import OperationNotSupported, ProviderNotFound, SiteRefused
from federation.providers.base import ComputeProvider, Operation
from tests.federation.contract_cases import CLASSES, KNOWING_USERS, Case, kinds_without
from tests.federation.real_site import BROKER

KINDS = list(CLASSES)
UUID = "00000000-0000-4000-8000-000000000001"

#: Every optional method of the contract, by the operation that declares it.
OPERATION_METHODS: dict[Operation, tuple[str, ...]] = {
    Operation.STOP: ("stop_vm",),
    Operation.REBOOT: ("reboot_vm",),
    Operation.WAIT: ("wait_vm",),
    Operation.CONSOLE: ("console",),
    Operation.EVENTS: ("events",),
    Operation.DISKS: ("vm_disks", "attach_disk", "detach_disk"),
    Operation.VOLUMES: (
        "create_volume",
        "get_volume",
        "list_volumes",
        "update_volume",
        "delete_volume",
        "attach_volume",
        "detach_volume",
    ),
    Operation.NETWORKS: ("list_networks", "get_network"),
    Operation.IMAGES: ("list_images", "get_image", "register_image", "delete_image"),
}

#: One call of each optional method, with valid arguments (``vm`` is a provider VM id).
CALLS: dict[str, Callable[[ComputeProvider, str], Awaitable[Any]]] = {
    "stop_vm": lambda p, vm: p.stop_vm(vm, save=SaveAs(name="saved")),
    "reboot_vm": lambda p, vm: p.reboot_vm(vm),
    "wait_vm": lambda p, vm: p.wait_vm(vm, "running", 1.0),
    "console": lambda p, vm: p.console(vm, tail=100),
    "events": lambda p, vm: p.events(vm),
    "vm_disks": lambda p, vm: p.vm_disks(vm),
    "attach_disk": lambda p, vm: p.attach_disk(vm, DiskAttach(static_disk="debian-12")),
    "detach_disk": lambda p, vm: p.detach_disk(vm, "vdb"),
    "create_volume": lambda p, vm: p.create_volume(VolumeCreate(size_gib=1), idempotency_key="k"),
    "get_volume": lambda p, vm: p.get_volume(UUID),
    "list_volumes": lambda p, vm: p.list_volumes(VolumeListQuery()),
    "update_volume": lambda p, vm: p.update_volume(UUID, VolumeUpdate(tag="x")),
    "delete_volume": lambda p, vm: p.delete_volume(UUID),
    "attach_volume": lambda p, vm: p.attach_volume(UUID, VolumeAttach(vm_id=UUID)),
    "detach_volume": lambda p, vm: p.detach_volume(UUID, VolumeDetach()),
    "list_networks": lambda p, vm: p.list_networks(),
    "get_network": lambda p, vm: p.get_network("private"),
    "list_images": lambda p, vm: p.list_images(),
    "get_image": lambda p, vm: p.get_image("debian-12"),
    "register_image": lambda p, vm: p.register_image(
        ImageRegister(name="new", url="https://images.example/new.qcow2", size=1, sha1="a" * 40)
    ),
    "delete_image": lambda p, vm: p.delete_image("debian-12"),
}


# --- the shape of the contract: fails on a missing method -------------------------------


def test_the_operation_table_covers_every_optional_method() -> None:
    base_methods = {
        name
        for name, member in vars(ComputeProvider).items()
        if inspect.iscoroutinefunction(member) and not name.startswith("_")
    }
    required = {"create_vm", "get_vm", "list_vms", "kill_vm", "aclose"}
    mapped = {m for methods in OPERATION_METHODS.values() for m in methods}
    assert set(OPERATION_METHODS) == set(Operation)
    assert mapped == base_methods - required
    assert set(CALLS) == mapped


@pytest.mark.parametrize("kind", KINDS)
def test_every_required_method_is_implemented(kind: str) -> None:
    cls = CLASSES[kind]
    abstract = {
        name
        for name, member in vars(ComputeProvider).items()
        if getattr(member, "__isabstractmethod__", False)
    }
    assert abstract == {"create_vm", "get_vm", "list_vms", "kill_vm"}
    assert not inspect.isabstract(cls)
    for name in abstract:
        assert getattr(cls, name) is not getattr(ComputeProvider, name), name
        assert inspect.iscoroutinefunction(getattr(cls, name)), name


@pytest.mark.parametrize("kind", KINDS)
def test_declared_operations_are_implemented_and_the_others_are_not(kind: str) -> None:
    cls = CLASSES[kind]
    assert isinstance(cls.operations, frozenset)
    assert all(isinstance(op, Operation) for op in cls.operations)
    for operation, methods in OPERATION_METHODS.items():
        for name in methods:
            overridden = getattr(cls, name) is not getattr(ComputeProvider, name)
            assert overridden == (operation in cls.operations), (operation, name)


# --- required semantics ------------------------------------------------------------------


@pytest.mark.parametrize("case", KINDS, indirect=True)
async def test_create_then_get_and_list(case: Case) -> None:
    provider = case.provider
    req = case.request()
    vm = await provider.create_vm(req)
    assert vm.site == provider.name
    assert vm.provider_id
    assert vm.state in {VmState.PENDING, VmState.PROLOG, VmState.BOOT, VmState.RUNNING}
    assert (vm.vm_id, vm.idempotency_key) == (req.vm_id, req.idempotency_key)
    got = await provider.get_vm(vm.provider_id)
    assert (got.provider_id, got.site, got.image) == (vm.provider_id, provider.name, case.image)
    assert got.name == req.name
    assert got.instance_type == "m1.small"
    listed = await provider.list_vms()
    assert [v.provider_id for v in listed] == [vm.provider_id]
    assert await case.backend_live_count() == 1


@pytest.mark.parametrize("case", KINDS, indirect=True)
async def test_create_with_same_idempotency_key_makes_one_vm(case: Case) -> None:
    req = case.request("same-key-1")
    first = await case.provider.create_vm(req)
    second = await case.provider.create_vm(req)
    assert second.provider_id == first.provider_id
    assert await case.backend_live_count() == 1


@pytest.mark.parametrize("case", KINDS, indirect=True)
async def test_different_keys_make_different_vms(case: Case) -> None:
    a = await case.provider.create_vm(case.request())
    b = await case.provider.create_vm(case.request())
    assert a.provider_id != b.provider_id
    assert {v.provider_id for v in await case.provider.list_vms()} == {a.provider_id, b.provider_id}
    assert await case.backend_live_count() == 2


@pytest.mark.parametrize("case", KINDS, indirect=True)
async def test_kill_returns_the_vm_and_removes_it_from_the_listing(case: Case) -> None:
    provider = case.provider
    vm = await provider.create_vm(case.request())
    killed = await provider.kill_vm(vm.provider_id)
    assert killed is not None and killed.provider_id == vm.provider_id
    assert killed.state in {VmState.SHUTDOWN, VmState.DONE}
    assert vm.provider_id not in {v.provider_id for v in await provider.list_vms()}
    with_done = {v.provider_id: v.state for v in await provider.list_vms(include_done=True)}
    assert with_done.get(vm.provider_id, VmState.DONE) in {VmState.SHUTDOWN, VmState.DONE}
    assert await case.backend_live_count() == 0


@pytest.mark.parametrize("case", KINDS, indirect=True)
async def test_kill_twice_and_kill_missing_succeed(case: Case) -> None:
    vm = await case.provider.create_vm(case.request())
    assert await case.provider.kill_vm(vm.provider_id) is not None
    again = await case.provider.kill_vm(vm.provider_id, force=True)
    assert again is None or again.state in {VmState.SHUTDOWN, VmState.DONE}
    assert await case.provider.kill_vm(case.missing_id) is None
    assert await case.backend_live_count() == 0


@pytest.mark.parametrize("case", KINDS, indirect=True)
async def test_get_missing_raises_not_found(case: Case) -> None:
    with pytest.raises(ProviderNotFound) as info:
        await case.provider.get_vm(case.missing_id)
    assert info.value.site == case.provider.name


@pytest.mark.parametrize("case", KINDS, indirect=True)
async def test_refused_create_leaves_nothing(case: Case) -> None:
    with pytest.raises(SiteRefused) as info:
        await case.provider.create_vm(case.request(image="no-such-image"))
    assert "no-such-image" in info.value.reason
    assert 400 <= info.value.status < 500
    assert await case.backend_live_count() == 0
    assert await case.provider.list_vms() == []


@pytest.mark.parametrize("case", KINDS, indirect=True)
async def test_create_by_cpu_and_ram(case: Case) -> None:
    req = case.request(instance_type=None, vcpus=2, memory_mib=2048)
    vm = await case.provider.get_vm((await case.provider.create_vm(req)).provider_id)
    assert (vm.vcpus or 0) >= 2 and (vm.memory_mib or 0) >= 2048


@pytest.mark.parametrize("case", ["fake", "peer", "cloud"], indirect=True)
async def test_acting_for_no_user_is_the_federation_itself(case: Case) -> None:
    view = case.provider.acting_for(None)
    vm = await view.create_vm(case.request())
    assert vm.provider_id in {v.provider_id for v in await case.provider.list_vms()}
    assert view.name == case.provider.name and view.operations == case.provider.operations


# --- undeclared operations: refused, nothing changed ---------------------------------------


@pytest.mark.parametrize(
    ("case", "operation"),
    [(kind, op) for op in Operation for kind in kinds_without(op)],
    indirect=["case"],
)
async def test_undeclared_operations_raise_and_change_nothing(
    case: Case, operation: Operation
) -> None:
    assert operation not in case.provider.operations
    assert not case.provider.supports(operation)
    vm = await case.provider.create_vm(case.request())
    before = await case.provider.list_vms(include_done=True)
    for name in OPERATION_METHODS[operation]:
        with pytest.raises(OperationNotSupported) as info:
            await CALLS[name](case.provider, vm.provider_id)
        assert info.value.operation == operation.value
        assert info.value.site == case.provider.name
    after = await case.provider.list_vms(include_done=True)
    assert [(v.provider_id, v.state) for v in after] == [(v.provider_id, v.state) for v in before]


# --- acting for users ----------------------------------------------------------------------

ALICE = DelegatedUser(
    account="alice",
    identity="federated:test-broker:alice",
    method="password",
    groups=frozenset({"physics"}),
)
BOB = DelegatedUser(account="bob", identity="federated:test-broker:bob", method="password")


@pytest.mark.parametrize("case", KNOWING_USERS, indirect=True)
async def test_acting_for_users_keeps_them_apart(case: Case) -> None:
    """Each user sees and changes only their own VMs; the federation's view sees them all."""
    p = case.provider
    assert p.knows_users
    alice, bob = p.acting_for(ALICE), p.acting_for(BOB)
    assert alice is not p and alice.name == p.name
    vm = await alice.create_vm(case.request("same-key"))
    assert vm.extra["owner"] == "alice"
    if case.kind == "peer":
        assert vm.extra["via"] == BROKER  # the site records who made it for alice
    assert [v.provider_id for v in await alice.list_vms()] == [vm.provider_id]
    assert await bob.list_vms() == []
    with pytest.raises(ProviderNotFound):
        await bob.get_vm(vm.provider_id)
    assert await bob.kill_vm(vm.provider_id) is None
    assert (await alice.get_vm(vm.provider_id)).state.is_active
    # Idempotency keys are per user: bob's create with alice's key is bob's own VM.
    theirs = await bob.create_vm(case.request("same-key"))
    assert theirs.provider_id != vm.provider_id and theirs.extra["owner"] == "bob"
    everyone = {v.provider_id for v in await p.list_vms()}
    assert {vm.provider_id, theirs.provider_id} <= everyone
    assert await case.backend_live_count() == 2
    assert (await alice.kill_vm(vm.provider_id)) is not None
    assert [v.provider_id for v in await alice.list_vms()] == []


@pytest.mark.parametrize("case", KNOWING_USERS, indirect=True)
async def test_a_users_private_volume_is_theirs_only(case: Case) -> None:
    alice, bob = case.provider.acting_for(ALICE), case.provider.acting_for(BOB)
    volume = await alice.create_volume(VolumeCreate(size_gib=1, tag="mine"), idempotency_key="v")
    assert volume.owner == "alice"
    assert await bob.list_volumes(VolumeListQuery()) == []
    with pytest.raises(ProviderNotFound):
        await bob.get_volume(volume.id)
    await bob.delete_volume(volume.id)  # not bob's to see: "missing", nothing deleted
    assert (await alice.get_volume(volume.id)).id == volume.id
    await alice.update_volume(volume.id, VolumeUpdate(visibility="public"))
    assert [v.id for v in await bob.list_volumes(VolumeListQuery())] == [volume.id]
    with pytest.raises(SiteRefused) as info:
        await bob.update_volume(volume.id, VolumeUpdate(tag="taken"))
    assert info.value.status == 403
