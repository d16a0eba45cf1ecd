"""Host placement: filter by capacity and tags, rank by free RAM, VM count, URI."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from site_agent.compute.driver import Accel, DomainSpec, DomainState
from site_agent.compute.errors import ComputeError, NoHostAvailable
from site_agent.compute.hosts import HostLoad, choose_host
from site_agent.compute.libvirt_driver import LibvirtDriver


def _host(uri: str, cpus: int = 8, mem: int = 8192, **kw: object) -> HostLoad:
    return HostLoad(uri=uri, cpus=cpus, memory_mib=mem, **kw)  # type: ignore[arg-type]


def test_most_free_ram_wins() -> None:
    hosts = [
        _host("qemu+ssh://a/system", used_memory_mib=4096),
        _host("qemu+ssh://b/system", used_memory_mib=1024),
        _host("qemu+ssh://c/system", used_memory_mib=6000),
    ]
    assert choose_host(hosts, vcpus=1, memory_mib=512).uri == "qemu+ssh://b/system"


def test_ties_go_to_fewest_vms_then_uri() -> None:
    hosts = [
        _host("h3", running_vms=2),
        _host("h2", running_vms=1),
        _host("h1", running_vms=1),
    ]
    assert choose_host(hosts, vcpus=1, memory_mib=512).uri == "h1"
    assert choose_host(list(reversed(hosts)), vcpus=1, memory_mib=512).uri == "h1"
    assert choose_host(hosts[:1] + hosts[1:2], vcpus=1, memory_mib=512).uri == "h2"


def test_capacity_and_tags_filter_with_reasons() -> None:
    hosts = [
        _host("small", cpus=2, mem=1024),
        _host("busy", used_cpus=8),
        _host("untagged"),
        _host("gpu", tags=frozenset({"gpu", "ssd"}), used_memory_mib=7000),
    ]
    with pytest.raises(NoHostAvailable) as info:
        choose_host(hosts, vcpus=4, memory_mib=2048, required_tags=frozenset({"gpu"}))
    reasons = info.value.reasons
    assert set(reasons) == {"small", "busy", "untagged", "gpu"}
    assert "vCPUs" in reasons["small"] and "MiB" in reasons["small"]
    assert "missing tags gpu" in reasons["small"]
    assert "vCPUs" in reasons["busy"]
    assert reasons["untagged"] == "missing tags gpu"
    assert "MiB" in reasons["gpu"] and "tags" not in reasons["gpu"]
    assert isinstance(info.value, ComputeError)
    assert "gpu" in str(info.value)
    assert choose_host(hosts, vcpus=1, memory_mib=512, required_tags=frozenset({"gpu"})).uri == (
        "gpu"
    )


def test_exact_fit_is_accepted() -> None:
    host = _host("h", cpus=2, mem=1024, used_cpus=1, used_memory_mib=512)
    assert choose_host([host], vcpus=1, memory_mib=512) is host
    with pytest.raises(NoHostAvailable):
        choose_host([host], vcpus=1, memory_mib=513)


def test_overcommit_stretches_capacity() -> None:
    host = _host("h", cpus=2, mem=1000, used_cpus=2, used_memory_mib=1000)
    with pytest.raises(NoHostAvailable):
        choose_host([host], vcpus=2, memory_mib=100)
    assert (
        choose_host([host], vcpus=2, memory_mib=100, overcommit_cpu=2.0, overcommit_ram=1.5) is host
    )
    # RAM ranking uses overcommitted free memory too.
    a = _host("a", mem=1000, used_memory_mib=0)
    b = _host("b", mem=2000, used_memory_mib=1500)
    assert choose_host([a, b], vcpus=1, memory_mib=10).uri == "a"
    assert choose_host([a, b], vcpus=1, memory_mib=10, overcommit_ram=3.0).uri == "b"


def test_no_hosts_and_bad_arguments() -> None:
    with pytest.raises(NoHostAvailable) as info:
        choose_host([], vcpus=1, memory_mib=128)
    assert info.value.reasons == {}
    with pytest.raises(ValueError):
        choose_host([_host("h")], vcpus=0, memory_mib=128)
    with pytest.raises(ValueError):
        choose_host([_host("h")], vcpus=1, memory_mib=128, overcommit_cpu=0)


# -- many libvirt test-driver hosts, each with its own capacity --------------------------------


def _node_xml(path: Path, *, cpus: int, memory_mib: int) -> str:
    """A libvirt test-driver node description: ``test://<path>`` is a host of that size."""
    node = ET.Element("node")
    cpu = ET.SubElement(node, "cpu")
    for tag, value in (
        ("mhz", 2000),
        ("model", "x86_64"),
        ("nodes", 1),
        ("sockets", 1),
        ("cores", cpus),
        ("threads", 1),
        ("active", cpus),
    ):
        ET.SubElement(cpu, tag).text = str(value)
    ET.SubElement(node, "memory").text = str(memory_mib * 1024)  # KiB
    path.write_text(ET.tostring(node, encoding="unicode"), encoding="utf-8")
    return f"test://{path}"


SIZES = [(2, 2048), (4, 4096), (8, 8192), (4, 16384), (16, 3072), (2, 1024)]


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[list[LibvirtDriver]]:
    """Six connected test-driver hosts of different sizes; each connection has its own state."""
    drivers = [
        LibvirtDriver(_node_xml(tmp_path / f"node{i}.xml", cpus=c, memory_mib=m))
        for i, (c, m) in enumerate(SIZES)
    ]
    for driver in drivers:
        await driver.connect()
    yield drivers
    for driver in drivers:
        for vm_id in await driver.list_domains():
            await driver.undefine(vm_id)
        await driver.close()


async def test_placement_over_many_libvirt_hosts(fleet: list[LibvirtDriver]) -> None:
    infos = {d.uri: await d.host_info() for d in fleet}
    assert [(i.cpus, i.memory_mib) for i in infos.values()] == SIZES
    assert all(i.accel is Accel.TEST for i in infos.values())
    drivers = {d.uri: d for d in fleet}
    used: dict[str, list[DomainSpec]] = {uri: [] for uri in drivers}

    def loads() -> list[HostLoad]:
        return [
            HostLoad.from_host_info(
                infos[uri],
                used_cpus=sum(s.vcpus for s in specs),
                used_memory_mib=sum(s.memory_mib for s in specs),
                running_vms=len(specs),
            )
            for uri, specs in used.items()
        ]

    order: list[str] = []
    while True:
        try:
            host = choose_host(loads(), vcpus=1, memory_mib=1024)
        except NoHostAvailable as exc:
            assert set(exc.reasons) == set(drivers)
            break
        spec = DomainSpec(vm_id=str(uuid.uuid4()), vcpus=1, memory_mib=1024)
        await drivers[host.uri].start(spec)
        used[host.uri].append(spec)
        order.append(host.uri)
        assert len(order) < 100, "placement never filled up"

    # Every host is filled to its RAM or CPU limit, never beyond.
    for uri, specs in used.items():
        info = infos[uri]
        assert sum(s.memory_mib for s in specs) <= info.memory_mib
        assert len(specs) <= info.cpus
        assert len(specs) == min(info.cpus, info.memory_mib // 1024)
        listed = await drivers[uri].list_domains()  # the hosts really run what was placed
        assert listed == {s.vm_id: DomainState.RUNNING for s in specs}
    assert len(order) == sum(min(c, m // 1024) for c, m in SIZES)
    # The host with the most RAM (16 GiB, 4 CPUs) takes the first VMs, until the
    # 8 GiB one has as much free RAM and fewer VMs.
    assert order[:4] == [fleet[3].uri] * 4
    assert order[4] == fleet[2].uri
