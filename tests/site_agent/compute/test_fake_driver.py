"""FakeDriver extras for upper-layer tests: failure injection and the fake console line."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from site_agent.compute.driver import DomainSpec, DomainState
from site_agent.compute.errors import (
    DomainCreateFailed,
    DomainNotFound,
    HypervisorUnavailable,
)
from site_agent.compute.fake_driver import FakeDriver


def _spec(tmp_path: Path) -> DomainSpec:
    vm_id = str(uuid.uuid4())
    return DomainSpec(vm_id=vm_id, vcpus=1, memory_mib=128, console_log=tmp_path / f"{vm_id}.log")


async def _connected(**kw: object) -> FakeDriver:
    driver = FakeDriver("fake://h1", **kw)  # type: ignore[arg-type]
    await driver.connect()
    return driver


async def test_fake_console_announces_ready_on_start_and_reboot(tmp_path: Path) -> None:
    driver = await _connected()
    spec = _spec(tmp_path)
    await driver.start(spec)
    assert spec.console_log is not None
    assert spec.console_log.read_text() == f"STRATUS-READY {spec.vm_id} none\n"
    await driver.reboot(spec.vm_id)
    assert spec.console_log.read_text().splitlines() == [
        f"STRATUS-READY {spec.vm_id} none",
        "[fake] reset",
        f"STRATUS-READY {spec.vm_id} none",
    ]
    assert driver.domains[spec.vm_id].boots == 2


async def test_console_writing_can_be_turned_off(tmp_path: Path) -> None:
    driver = await _connected(write_console=False)
    spec = _spec(tmp_path)
    await driver.start(spec)
    assert spec.console_log is not None and not spec.console_log.exists()


async def test_fail_next_start_fails_once_and_defines_nothing(tmp_path: Path) -> None:
    driver = await _connected()
    driver.fail_next_start = "out of memory"
    spec = _spec(tmp_path)
    with pytest.raises(DomainCreateFailed, match="out of memory"):
        await driver.start(spec)
    assert driver.fail_next_start is None
    assert await driver.state(spec.vm_id) is DomainState.MISSING
    await driver.start(spec)  # the next one works
    assert await driver.state(spec.vm_id) is DomainState.RUNNING


async def test_fail_next_raises_the_given_error_once(tmp_path: Path) -> None:
    driver = await _connected()
    spec = _spec(tmp_path)
    await driver.start(spec)
    driver.fail_next("state", HypervisorUnavailable("link down"))
    with pytest.raises(HypervisorUnavailable, match="link down"):
        await driver.state(spec.vm_id)
    assert await driver.state(spec.vm_id) is DomainState.RUNNING
    with pytest.raises(ValueError):
        driver.fail_next("no_such_method", HypervisorUnavailable("x"))


async def test_guest_events_and_ignored_power_button(tmp_path: Path) -> None:
    driver = await _connected()
    driver.acpi_poweroff = False
    spec = _spec(tmp_path)
    await driver.start(spec)
    await driver.shutdown(spec.vm_id)
    assert await driver.state(spec.vm_id) is DomainState.RUNNING  # ignored
    await driver.destroy(spec.vm_id)
    assert await driver.state(spec.vm_id) is DomainState.SHUTOFF
    await driver.undefine(spec.vm_id)
    await driver.start(spec)
    driver.crash(spec.vm_id)
    assert await driver.state(spec.vm_id) is DomainState.CRASHED
    await driver.destroy(spec.vm_id)  # a crash stays visible
    assert await driver.state(spec.vm_id) is DomainState.CRASHED
    other = _spec(tmp_path)
    await driver.start(other)
    driver.guest_poweroff(other.vm_id)
    assert await driver.list_domains() == {
        spec.vm_id: DomainState.CRASHED,
        other.vm_id: DomainState.SHUTOFF,
    }


async def test_a_lost_host_is_unavailable_until_it_is_back(tmp_path: Path) -> None:
    driver = await _connected()
    spec = _spec(tmp_path)
    await driver.start(spec)
    driver.disconnect()
    with pytest.raises(HypervisorUnavailable):
        await driver.list_domains()
    with pytest.raises(HypervisorUnavailable):
        await driver.connect()
    with pytest.raises(DomainCreateFailed):  # start always reports DomainCreateFailed
        await driver.start(_spec(tmp_path))
    driver.reachable = True
    await driver.connect()
    assert await driver.list_domains() == {spec.vm_id: DomainState.RUNNING}
    with pytest.raises(DomainNotFound):
        await driver.reboot(str(uuid.uuid4()))
    assert driver.calls.count("list_domains") == 2


async def test_host_info_uses_the_configured_capacity() -> None:
    driver = await _connected(cpus=3, memory_mib=4096)
    info = await driver.host_info()
    assert (info.uri, info.cpus, info.memory_mib) == ("fake://h1", 3, 4096)
