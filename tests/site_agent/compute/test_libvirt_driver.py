"""LibvirtDriver specifics beyond the contract: rollback, state map, accel, reconnect."""

from __future__ import annotations

import asyncio
import sys
import types
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import libvirt
import pytest

from site_agent.compute import libvirt_driver
from site_agent.compute.driver import Accel, DomainSpec, DomainState
from site_agent.compute.errors import ComputeError, DeviceError, DomainCreateFailed
from site_agent.compute.libvirt_driver import STATE_MAP, LibvirtDriver, accel_for_uri

TEST_URI = "test:///default"


@pytest.fixture
async def driver() -> AsyncIterator[LibvirtDriver]:
    drv = LibvirtDriver(TEST_URI)
    await drv.connect()
    yield drv
    await drv.close()


@pytest.fixture
async def new_spec(driver: LibvirtDriver) -> AsyncIterator[Callable[[], DomainSpec]]:
    """Specs with fresh VM ids, all undefined after the test."""
    created: list[str] = []

    def make() -> DomainSpec:
        vm_id = str(uuid.uuid4())
        created.append(vm_id)
        return DomainSpec(vm_id=vm_id, vcpus=1, memory_mib=128)

    yield make
    await driver.connect()
    for vm_id in created:
        await driver.undefine(vm_id)


async def test_failed_create_undefines_the_domain(
    driver: LibvirtDriver, new_spec: Callable[[], DomainSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    defined: list[str] = []
    real_define = libvirt.virConnect.defineXML

    def spy_define(self: Any, xml: str) -> Any:
        dom = real_define(self, xml)
        defined.append(dom.name())
        return dom

    def failing_create(self: Any) -> int:
        raise libvirt.libvirtError("simulated: qemu refused to start")

    monkeypatch.setattr(libvirt.virConnect, "defineXML", spy_define)
    monkeypatch.setattr(libvirt.virDomain, "create", failing_create)
    spec = new_spec()
    with pytest.raises(DomainCreateFailed) as info:
        await driver.start(spec)
    assert isinstance(info.value.__cause__, libvirt.libvirtError)
    assert defined == [spec.domain_name]  # it was defined ...
    assert await driver.state(spec.vm_id) is DomainState.MISSING  # ... and removed again


async def test_same_vm_id_through_another_connection_is_refused(
    driver: LibvirtDriver, new_spec: Callable[[], DomainSpec]
) -> None:
    spec = new_spec()
    other = LibvirtDriver(TEST_URI)
    await other.connect()
    try:
        await driver.start(spec)
        # Same VM id through a second connection: refused, existing domain untouched.
        with pytest.raises(DomainCreateFailed):
            await other.start(spec)
    finally:
        await other.close()
    assert await driver.state(spec.vm_id) is DomainState.RUNNING


def test_state_map_covers_every_libvirt_domain_state() -> None:
    names = [
        "NOSTATE",
        "RUNNING",
        "BLOCKED",
        "PAUSED",
        "SHUTDOWN",
        "SHUTOFF",
        "CRASHED",
        "PMSUSPENDED",
    ]
    codes = {getattr(libvirt, f"VIR_DOMAIN_{name}") for name in names}
    assert set(STATE_MAP) == codes
    assert STATE_MAP[libvirt.VIR_DOMAIN_RUNNING] is DomainState.RUNNING
    assert STATE_MAP[libvirt.VIR_DOMAIN_SHUTOFF] is DomainState.SHUTOFF
    assert STATE_MAP[libvirt.VIR_DOMAIN_SHUTDOWN] is DomainState.SHUTTING_DOWN
    assert STATE_MAP[libvirt.VIR_DOMAIN_CRASHED] is DomainState.CRASHED
    assert DomainState.MISSING not in STATE_MAP.values()  # only for "no such domain"
    with pytest.raises(ComputeError):
        LibvirtDriver._map_state(max(codes) + 100)
    crashed = LibvirtDriver._map_state(
        libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED
    )
    assert crashed is DomainState.CRASHED
    destroyed = LibvirtDriver._map_state(
        libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED
    )
    assert destroyed is DomainState.SHUTOFF


def _fake_accel_module(monkeypatch: pytest.MonkeyPatch, result: Accel | Exception) -> None:
    module = types.ModuleType("site_agent.compute.accel")

    def detect_local_accel() -> Accel:
        if isinstance(result, Exception):
            raise result
        return result

    module.detect_local_accel = detect_local_accel  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "site_agent.compute.accel", module)
    monkeypatch.setattr(libvirt_driver, "_local_accel", None)  # forget the process-wide verdict


def test_accel_from_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    assert accel_for_uri("test:///default") is Accel.TEST
    assert accel_for_uri("test:///tmp/node.xml") is Accel.TEST
    assert accel_for_uri("qemu+ssh://hv1.example/system") is Accel.TCG  # remote: TCG unless set
    _fake_accel_module(monkeypatch, Accel.KVM)
    assert accel_for_uri("qemu:///system") is Accel.KVM
    assert accel_for_uri("qemu+unix:///system") is Accel.KVM
    assert accel_for_uri("qemu+ssh://hv1.example/system") is Accel.TCG
    _fake_accel_module(monkeypatch, RuntimeError("probe broke"))
    assert accel_for_uri("qemu:///system") is Accel.TCG
    monkeypatch.setitem(sys.modules, "site_agent.compute.accel", None)  # module absent
    monkeypatch.setattr(libvirt_driver, "_local_accel", None)
    assert accel_for_uri("qemu:///system") is Accel.TCG


async def test_configured_accel_wins() -> None:
    driver = LibvirtDriver(TEST_URI, accel=Accel.TEST)
    assert driver.accel is Accel.TEST
    await driver.connect()
    try:
        assert (await driver.host_info()).accel is Accel.TEST
    finally:
        await driver.close()


async def test_reconnects_after_the_connection_died(
    driver: LibvirtDriver, new_spec: Callable[[], DomainSpec]
) -> None:
    # test:///default lives as long as one connection of the process is open: keep one,
    # standing for the daemon that survives while our connection to it breaks.
    keeper = LibvirtDriver(TEST_URI)
    await keeper.connect()
    try:
        spec = new_spec()
        await driver.start(spec)
        driver._conn.close()  # our connection dies under the driver
        assert await driver.state(spec.vm_id) is DomainState.RUNNING
        assert spec.vm_id in await driver.list_domains()
    finally:
        await keeper.close()


async def test_many_concurrent_operations(
    driver: LibvirtDriver, new_spec: Callable[[], DomainSpec]
) -> None:
    specs = [new_spec() for _ in range(20)]
    await asyncio.gather(*(driver.start(s) for s in specs))
    listed = await driver.list_domains()
    assert all(listed[s.vm_id] is DomainState.RUNNING for s in specs)
    await asyncio.gather(*(driver.undefine(s.vm_id) for s in specs))
    listed = await driver.list_domains()
    assert not {s.vm_id for s in specs} & set(listed)


async def test_detach_that_the_guest_never_completes_raises_device_error(
    driver: LibvirtDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver.detach_timeout = 0.3
    monkeypatch.setattr(driver, "_detach_sync", lambda vm_id, target: True)
    monkeypatch.setattr(driver, "_still_attached_sync", lambda vm_id, target: True)
    with pytest.raises(DeviceError, match="did not release"):
        await driver.detach_disk(str(uuid.uuid4()), "vdb")


def test_the_local_probe_runs_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    module = types.ModuleType("site_agent.compute.accel")

    def detect_local_accel() -> Accel:
        calls.append(1)
        return Accel.TCG

    module.detect_local_accel = detect_local_accel  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "site_agent.compute.accel", module)
    monkeypatch.setattr(libvirt_driver, "_local_accel", None)
    assert [accel_for_uri("qemu:///system") for _ in range(3)] == [Accel.TCG] * 3
    assert len(calls) == 1
