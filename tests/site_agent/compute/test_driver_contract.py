"""The ``HypervisorDriver`` contract, run against every implementation (see ``conftest.backend``).

Each test states one rule of ``site_agent.compute.driver``. The last test
checks that every abstract method of the interface is exercised here, so
adding a method to the interface without a contract test fails the suite.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import uuid
from dataclasses import replace

import pytest

from site_agent.compute.driver import (
    Accel,
    DomainSpec,
    DomainState,
    HypervisorDriver,
    NetworkSpec,
    NicSpec,
)
from site_agent.compute.errors import (
    DeviceError,
    DiskNotAttached,
    DomainCreateFailed,
    DomainNotFound,
    DomainStateError,
    HypervisorUnavailable,
    NetworkError,
)
from site_agent.compute.fake_driver import FakeDriver
from site_agent.compute.libvirt_driver import LibvirtDriver
from tests.site_agent.compute.harness import Backend, read_log, wait_for

SHUTDOWN_TIMEOUT = 60.0  # a cooperating guest powers off well within this
IGNORED_SHUTDOWN_WAIT = 5.0  # how long we watch a guest that ignores the power button


async def test_host_info_reports_capacity_and_accel(backend: Backend) -> None:
    info = await backend.driver.host_info()
    assert info.uri == backend.driver.uri
    assert info.cpus >= 1
    assert info.memory_mib >= 64
    assert info.hostname
    if backend.real:
        assert info.accel in (Accel.KVM, Accel.TCG)
        assert info.arch == "x86_64"
    else:
        assert info.accel is Accel.TEST


async def test_start_gives_a_running_domain(backend: Backend) -> None:
    spec = backend.spec()
    await backend.driver.start(spec)
    assert await backend.driver.state(spec.vm_id) is DomainState.RUNNING
    assert (await backend.driver.list_domains())[spec.vm_id] is DomainState.RUNNING
    if backend.console:
        await backend.wait_ready(spec)
        assert read_log(spec.console_log), "the serial console was not logged"


async def test_list_domains_reports_only_stratus_domains(backend: Backend) -> None:
    first, second = backend.spec(), backend.spec()
    await backend.driver.start(first)
    await backend.driver.start(second)
    await backend.driver.destroy(second.vm_id)
    foreign = await backend.define_foreign()

    listed = await backend.driver.list_domains()

    assert listed[first.vm_id] is DomainState.RUNNING
    assert listed[second.vm_id] is DomainState.SHUTOFF  # stopped domains are listed too
    for vm_id in listed:
        assert not vm_id.startswith("stratus-"), "vm ids are reported without the prefix"
        assert vm_id != foreign and not vm_id.startswith("other-")
    if isinstance(backend.driver, LibvirtDriver) and backend.driver.uri.startswith("test:"):
        assert "test" not in listed  # the test driver's built-in domain is not ours


async def test_state_of_a_missing_domain_is_missing(backend: Backend) -> None:
    assert await backend.driver.state(str(uuid.uuid4())) is DomainState.MISSING


async def test_destroy_and_undefine_of_missing_domain_succeed(backend: Backend) -> None:
    vm_id = str(uuid.uuid4())
    await backend.driver.destroy(vm_id)
    await backend.driver.undefine(vm_id)
    assert await backend.driver.state(vm_id) is DomainState.MISSING


async def test_destroy_keeps_definition_and_undefine_removes_it(backend: Backend) -> None:
    spec = backend.spec()
    await backend.driver.start(spec)

    await backend.driver.destroy(spec.vm_id)
    assert await backend.driver.state(spec.vm_id) is DomainState.SHUTOFF
    await backend.driver.destroy(spec.vm_id)  # already stopped: still fine
    assert await backend.driver.state(spec.vm_id) is DomainState.SHUTOFF

    await backend.driver.undefine(spec.vm_id)
    assert await backend.driver.state(spec.vm_id) is DomainState.MISSING
    assert spec.vm_id not in await backend.driver.list_domains()
    await backend.driver.undefine(spec.vm_id)  # twice: still fine


async def test_undefine_of_a_running_domain_destroys_it(backend: Backend) -> None:
    spec = backend.spec()
    await backend.driver.start(spec)
    await backend.driver.undefine(spec.vm_id)
    assert await backend.driver.state(spec.vm_id) is DomainState.MISSING


async def test_failed_start_leaves_nothing_defined(backend: Backend) -> None:
    spec = backend.failing_spec()
    with pytest.raises(DomainCreateFailed):
        await backend.driver.start(spec)
    assert await backend.driver.state(spec.vm_id) is DomainState.MISSING
    assert spec.vm_id not in await backend.driver.list_domains()


async def test_invalid_spec_is_refused_before_anything_is_defined(backend: Backend) -> None:
    spec = backend.spec(vcpus=0)
    with pytest.raises(DomainCreateFailed):
        await backend.driver.start(spec)
    assert await backend.driver.state(spec.vm_id) is DomainState.MISSING
    bad_id = replace(backend.spec(), vm_id="x</name><devices/>")
    with pytest.raises(DomainCreateFailed):
        await backend.driver.start(bad_id)


async def test_start_of_an_existing_vm_id_fails_and_keeps_the_domain(backend: Backend) -> None:
    spec = backend.spec()
    await backend.driver.start(spec)
    with pytest.raises(DomainCreateFailed):
        await backend.driver.start(spec)
    assert await backend.driver.state(spec.vm_id) is DomainState.RUNNING


async def test_attach_and_detach_disk(backend: Backend) -> None:
    spec = backend.spec()
    await backend.driver.start(spec)
    await backend.wait_ready(spec)
    disk = backend.disk("vdb")
    if not backend.hotplug:
        with pytest.raises(DeviceError):
            await backend.driver.attach_disk(spec.vm_id, disk)
        return

    await backend.driver.attach_disk(spec.vm_id, disk)
    assert "vdb" in await backend.disk_targets(spec.vm_id)
    await _guest_sees(backend, spec, "STRATUS-BLOCK add vdb")
    with pytest.raises(DeviceError):  # the target is taken
        await backend.driver.attach_disk(spec.vm_id, backend.disk("vdb"))

    await backend.driver.detach_disk(spec.vm_id, "vdb")
    assert "vdb" not in await backend.disk_targets(spec.vm_id)
    await _guest_sees(backend, spec, "STRATUS-BLOCK remove vdb")
    with pytest.raises(DeviceError):  # no longer attached
        await backend.driver.detach_disk(spec.vm_id, "vdb")
    assert await backend.driver.state(spec.vm_id) is DomainState.RUNNING


async def _guest_sees(backend: Backend, spec: DomainSpec, line: str) -> None:
    """On guests that report block devices, wait for ``line`` on the console."""
    if backend.guest is None or not backend.guest.block_events:
        return

    async def seen() -> bool:
        return line in read_log(spec.console_log)

    await wait_for(seen, 30, f"the guest to print {line!r}")


async def test_detach_of_unknown_target_raises_device_error(backend: Backend) -> None:
    spec = backend.spec()
    await backend.driver.start(spec)
    with pytest.raises(DiskNotAttached):  # a DeviceError
        await backend.driver.detach_disk(spec.vm_id, "vdz")


async def test_disk_operations_on_a_missing_domain_raise_not_found(backend: Backend) -> None:
    vm_id = str(uuid.uuid4())
    with pytest.raises(DomainNotFound):
        await backend.driver.attach_disk(vm_id, backend.disk("vdb"))
    with pytest.raises(DomainNotFound):
        await backend.driver.detach_disk(vm_id, "vdb")


async def test_networks_are_ensured_idempotently_and_removed(backend: Backend) -> None:
    tag = uuid.uuid4().hex[:10]
    spec = NetworkSpec(name=f"stratus-test-{tag}", bridge=f"stt{tag}")  # isolated, no address
    backend.cleanups.append(lambda: backend.driver.remove_network(spec.name))
    await backend.driver.ensure_network(spec)
    await backend.driver.ensure_network(spec)  # already there: fine
    nic = NicSpec(network=spec.name, mac="02:00:5e:" + ":".join([tag[0:2], tag[2:4], tag[4:6]]))
    vm = backend.spec(nics=(nic,))
    await backend.driver.start(vm)
    assert await backend.driver.state(vm.vm_id) is DomainState.RUNNING
    await backend.driver.undefine(vm.vm_id)
    await backend.driver.remove_network(spec.name)
    await backend.driver.remove_network(spec.name)  # missing: fine
    if backend.name != "libvirt-test":  # libvirt's test driver does not check NIC networks
        orphan = backend.spec(nics=(nic,))
        with pytest.raises(DomainCreateFailed):
            await backend.driver.start(orphan)
        assert await backend.driver.state(orphan.vm_id) is DomainState.MISSING
    with pytest.raises(NetworkError):
        await backend.driver.ensure_network(NetworkSpec(name="bad name", bridge="x"))
    with pytest.raises(NetworkError):
        await backend.driver.ensure_network(NetworkSpec(name=spec.name, bridge="b" * 16))


async def test_shutdown(backend: Backend) -> None:
    spec = backend.spec()
    await backend.driver.start(spec)
    await backend.wait_ready(spec)

    await backend.driver.shutdown(spec.vm_id)

    async def is_off() -> bool:
        return await backend.driver.state(spec.vm_id) is DomainState.SHUTOFF

    if backend.acpi_poweroff:
        await wait_for(is_off, SHUTDOWN_TIMEOUT, "the guest to power off")
    else:
        # This guest ignores the power button: after a timeout, stop falls back to destroy.
        await asyncio.sleep(IGNORED_SHUTDOWN_WAIT)
        assert await backend.driver.state(spec.vm_id) in (
            DomainState.RUNNING,
            DomainState.SHUTTING_DOWN,
        )
        await backend.driver.destroy(spec.vm_id)
        assert await is_off()
    # A powered-off domain stays defined, and a second shutdown is harmless.
    await backend.driver.shutdown(spec.vm_id)
    assert await backend.driver.state(spec.vm_id) is DomainState.SHUTOFF
    with pytest.raises(DomainNotFound):
        await backend.driver.shutdown(str(uuid.uuid4()))


async def test_reboot_keeps_running_and_the_console_log_continues(backend: Backend) -> None:
    spec = backend.spec()
    await backend.driver.start(spec)
    await backend.wait_ready(spec)
    before = read_log(spec.console_log)

    await backend.driver.reboot(spec.vm_id)

    assert await backend.driver.state(spec.vm_id) is DomainState.RUNNING
    if backend.console:
        await backend.wait_ready(spec, boots=2)

        async def grown() -> bool:
            return len(read_log(spec.console_log)) > len(before)

        await wait_for(grown, 30, "the console log to grow")
        assert read_log(spec.console_log).startswith(before), "the log was not appended to"
    with pytest.raises(DomainNotFound):
        await backend.driver.reboot(str(uuid.uuid4()))
    await backend.driver.destroy(spec.vm_id)
    with pytest.raises(DomainStateError):
        await backend.driver.reboot(spec.vm_id)


async def test_connect_close_lifecycle(backend: Backend) -> None:
    uri = backend.driver.uri
    driver: HypervisorDriver = (
        FakeDriver(uri) if isinstance(backend.driver, FakeDriver) else LibvirtDriver(uri)
    )
    with pytest.raises(HypervisorUnavailable):  # not connected yet
        await driver.state(str(uuid.uuid4()))
    await driver.connect()
    await driver.connect()  # idempotent
    assert await driver.state(str(uuid.uuid4())) is DomainState.MISSING
    await driver.close()
    await driver.close()  # idempotent
    with pytest.raises(HypervisorUnavailable):
        await driver.list_domains()


async def test_connect_to_an_unreachable_host_raises_unavailable(backend: Backend) -> None:
    driver: HypervisorDriver
    if isinstance(backend.driver, FakeDriver):
        fake = FakeDriver("fake://down")
        fake.reachable = False
        driver = fake
    else:
        # A local socket that does not exist: fails at once, no traffic anywhere.
        driver = LibvirtDriver(f"qemu+unix:///system?socket={backend.workdir}/no-libvirt-sock")
    with pytest.raises(HypervisorUnavailable):
        await driver.connect()
    await driver.close()


def _names_called_in_tests() -> set[str]:
    """Attribute names called (``x.name(...)``) inside the test functions of this module."""
    tree = ast.parse(inspect.getsource(inspect.getmodule(_names_called_in_tests)))  # type: ignore[arg-type]
    called: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef) and node.name.startswith(
            "test_"
        ):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute):
                    called.add(sub.func.attr)
    return called


def test_every_interface_method_is_exercised_by_the_contract() -> None:
    abstract = set(HypervisorDriver.__abstractmethods__)
    assert abstract, "HypervisorDriver lost its abstract methods"
    untested = abstract - _names_called_in_tests()
    assert not untested, f"HypervisorDriver methods without a contract test: {sorted(untested)}"


def test_an_incomplete_driver_cannot_be_instantiated() -> None:
    namespace = {
        name: getattr(FakeDriver, name)
        for name in HypervisorDriver.__abstractmethods__
        if name != "reboot"
    }
    incomplete = type("Incomplete", (HypervisorDriver,), namespace)
    with pytest.raises(TypeError, match="reboot"):
        incomplete()
    for implementation in (FakeDriver, LibvirtDriver):
        assert not getattr(implementation, "__abstractmethods__", None), implementation
