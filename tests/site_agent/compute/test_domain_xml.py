"""Domain and disk XML: structure, validation, and that no value can inject XML."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from site_agent.compute.domain_xml import METADATA_NS, disk_xml, domain_xml
from site_agent.compute.driver import Accel, DiskSpec, DomainSpec, NicSpec
from site_agent.compute.libvirt_driver import LibvirtDriver

INJECTION = "</name><devices><disk type='file'/></devices>\"'&<!-- ]]>"

#: Every element path of a full spec's domain (disk + NIC + kernel + console log).
EXPECTED_PATHS = {
    "domain",
    "domain/name",
    "domain/uuid",
    "domain/metadata",
    f"domain/metadata/{{{METADATA_NS}}}vm",
    "domain/memory",
    "domain/vcpu",
    "domain/os",
    "domain/os/type",
    "domain/os/kernel",
    "domain/os/initrd",
    "domain/os/cmdline",
    "domain/features",
    "domain/features/acpi",
    "domain/features/apic",
    "domain/clock",
    "domain/on_poweroff",
    "domain/on_reboot",
    "domain/on_crash",
    "domain/devices",
    "domain/devices/disk",
    "domain/devices/disk/driver",
    "domain/devices/disk/source",
    "domain/devices/disk/target",
    "domain/devices/interface",
    "domain/devices/interface/source",
    "domain/devices/interface/mac",
    "domain/devices/interface/model",
    "domain/devices/serial",
    "domain/devices/serial/log",
    "domain/devices/serial/target",
    "domain/devices/console",
    "domain/devices/console/target",
}


def _paths(element: ET.Element, prefix: str = "") -> list[str]:
    path = f"{prefix}/{element.tag}" if prefix else element.tag
    result = [path]
    for child in element:
        result.extend(_paths(child, path))
    return result


def _spec(**overrides: object) -> DomainSpec:
    base: dict[str, object] = {
        "vm_id": str(uuid.uuid4()),
        "vcpus": 2,
        "memory_mib": 256,
        "disks": (DiskSpec(path=Path("/var/lib/stratus/a.qcow2"), target="vda"),),
        "nics": (NicSpec(network="stratus-net", mac="52:54:00:12:34:56"),),
        "kernel": Path("/var/lib/stratus/vmlinuz"),
        "initrd": Path("/var/lib/stratus/initrd.img"),
        "cmdline": "console=ttyS0",
        "console_log": Path("/var/log/stratus/console.log"),
    }
    base.update(overrides)
    return DomainSpec(**base)  # type: ignore[arg-type]


def test_full_domain_has_exactly_the_expected_elements() -> None:
    spec = _spec()
    root = ET.fromstring(domain_xml(spec, Accel.TCG))
    paths = _paths(root)
    assert set(paths) == EXPECTED_PATHS
    assert len(paths) == len(EXPECTED_PATHS)  # each element once
    assert root.get("type") == "qemu"
    assert root.findtext("name") == f"stratus-{spec.vm_id}"
    assert root.findtext("uuid") == spec.vm_id
    assert root.find("memory").get("unit") == "MiB"  # type: ignore[union-attr]
    assert root.findtext("memory") == "256"
    assert root.findtext("vcpu") == "2"
    os_type = root.find("os/type")
    assert os_type is not None
    assert (os_type.text, os_type.get("arch"), os_type.get("machine")) == ("hvm", "x86_64", "pc")
    assert root.findtext("os/kernel") == "/var/lib/stratus/vmlinuz"
    assert root.findtext("on_poweroff") == "destroy"
    assert root.findtext("on_reboot") == "restart"
    assert root.findtext("on_crash") == "destroy"
    log = root.find("devices/serial/log")
    assert log is not None
    assert log.attrib == {"file": "/var/log/stratus/console.log", "append": "on"}
    assert root.find("devices/serial").get("type") == "pty"  # type: ignore[union-attr]
    assert root.find("devices/graphics") is None
    meta = root.find(f"metadata/{{{METADATA_NS}}}vm")
    assert meta is not None and meta.get("id") == spec.vm_id
    nic = root.find("devices/interface")
    assert nic is not None and nic.get("type") == "network"
    assert nic.find("model").get("type") == "virtio"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("accel", "domain_type"),
    [
        (Accel.KVM, "kvm"),
        (Accel.TCG, "qemu"),
        (Accel.TEST, "test"),
    ],
)
def test_domain_type_follows_the_accelerator(accel: Accel, domain_type: str) -> None:
    assert ET.fromstring(domain_xml(_spec(), accel)).get("type") == domain_type


def test_without_kernel_the_domain_boots_from_disk_and_emulator_is_optional() -> None:
    root = ET.fromstring(
        domain_xml(
            _spec(kernel=None, initrd=None, cmdline=None, console_log=None),
            Accel.KVM,
            emulator="/usr/bin/qemu-system-x86_64",
        )
    )
    assert root.find("os/kernel") is None
    assert root.find("os/boot").get("dev") == "hd"  # type: ignore[union-attr]
    assert root.findtext("devices/emulator") == "/usr/bin/qemu-system-x86_64"
    assert root.find("devices/serial/log") is None  # console still there, not logged
    assert root.find("devices/serial") is not None


def test_values_with_markup_stay_values() -> None:
    spec = _spec(
        cmdline=f"console=ttyS0 {INJECTION}",
        kernel=Path(f"/images/{INJECTION}/vmlinuz"),
        console_log=Path(f"/logs/{INJECTION}.log"),
        disks=(DiskSpec(path=Path(f"/disks/{INJECTION}.qcow2"), target="vda"),),
    )
    root = ET.fromstring(domain_xml(spec, Accel.TCG))
    assert set(_paths(root)) == EXPECTED_PATHS
    assert len(root.findall("devices/disk")) == 1
    assert root.findtext("name") == f"stratus-{spec.vm_id}"
    assert root.findtext("os/cmdline") == f"console=ttyS0 {INJECTION}"
    assert root.findtext("os/kernel") == f"/images/{INJECTION}/vmlinuz"
    assert root.find("devices/serial/log").get("file") == f"/logs/{INJECTION}.log"  # type: ignore[union-attr]
    assert root.find("devices/disk/source").get("file") == f"/disks/{INJECTION}.qcow2"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "vm_id",
    [
        f"{uuid.uuid4()}{INJECTION}",
        "</name><devices/>",
        str(uuid.uuid4()).upper(),  # not canonical
        uuid.uuid4().hex,  # no dashes
        "",
    ],
)
def test_vm_id_must_be_a_canonical_uuid(vm_id: str) -> None:
    with pytest.raises(ValueError):
        domain_xml(_spec(vm_id=vm_id), Accel.TCG)


@pytest.mark.parametrize(
    "overrides",
    [
        {"cmdline": "console=ttyS0\x00"},
        {"cmdline": "a\x1bb"},
        {"kernel": Path("relative/vmlinuz")},
        {"vcpus": 0},
        {"memory_mib": 0},
        {"kernel": None},  # initrd/cmdline without kernel
        {"nics": (NicSpec(network="net", mac="52:54:00:12:34"),)},
        {"nics": (NicSpec(network="net", mac="01:00:5e:00:00:01"),)},  # multicast
        {"nics": (NicSpec(network="a'b", mac="52:54:00:12:34:56"),)},
        {
            "disks": (
                DiskSpec(path=Path("/a"), target="vda"),
                DiskSpec(path=Path("/b"), target="vda"),
            )
        },
    ],
)
def test_invalid_specs_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        domain_xml(_spec(**overrides), Accel.TCG)


def test_disk_xml() -> None:
    disk = DiskSpec(
        path=Path("/data/shared.img"), target="vdc", format="raw", readonly=True, shareable=True
    )
    root = ET.fromstring(disk_xml(disk))
    assert root.tag == "disk"
    assert root.attrib == {"type": "file", "device": "disk"}
    assert root.find("driver").attrib == {"name": "qemu", "type": "raw"}  # type: ignore[union-attr]
    assert root.find("source").attrib == {"file": "/data/shared.img"}  # type: ignore[union-attr]
    assert root.find("target").attrib == {"dev": "vdc", "bus": "virtio"}  # type: ignore[union-attr]
    assert root.find("readonly") is not None
    assert root.find("shareable") is not None
    plain = ET.fromstring(disk_xml(DiskSpec(path=Path("/data/a.qcow2"), target="vdb")))
    assert plain.find("readonly") is None and plain.find("shareable") is None
    cdrom = ET.fromstring(
        disk_xml(
            DiskSpec(
                path=Path("/data/seed.iso"), target="sda", format="raw", device="cdrom", bus="sata"
            )
        )
    )
    assert cdrom.get("device") == "cdrom" and cdrom.find("readonly") is not None


@pytest.mark.parametrize(
    "disk",
    [
        DiskSpec(path=Path("/a"), target="vdb", format="vmdk"),
        DiskSpec(path=Path("/a"), target="vdb", device="floppy"),
        DiskSpec(path=Path("/a"), target="vdb", bus="xen"),
        DiskSpec(path=Path("/a"), target="vdb'/><x"),
        DiskSpec(path=Path("/a"), target="vdb", device="cdrom"),  # cdrom on virtio
        DiskSpec(path=Path("a.qcow2"), target="vdb"),
    ],
)
def test_invalid_disks_are_refused(disk: DiskSpec) -> None:
    with pytest.raises(ValueError):
        disk_xml(disk)


@pytest.fixture
async def test_driver() -> AsyncIterator[LibvirtDriver]:
    driver = LibvirtDriver("test:///default")
    await driver.connect()
    yield driver
    await driver.close()


async def test_libvirt_keeps_injected_text_as_values(test_driver: LibvirtDriver) -> None:
    """libvirt's test driver accepts the XML and reads back exactly the values given."""
    import libvirt

    spec = _spec(cmdline=f"console=ttyS0 {INJECTION}", nics=())
    await test_driver.start(spec)
    try:
        conn = libvirt.open("test:///default")
        try:
            xml = conn.lookupByName(f"stratus-{spec.vm_id}").XMLDesc(0)
        finally:
            conn.close()
        root = ET.fromstring(xml)
        assert root.findtext("os/cmdline") == f"console=ttyS0 {INJECTION}"
        assert root.findtext("name") == f"stratus-{spec.vm_id}"
        assert len(root.findall("devices/disk")) == 1
        meta = root.find(f"metadata/{{{METADATA_NS}}}vm")
        assert meta is not None and meta.get("id") == spec.vm_id
    finally:
        await test_driver.undefine(spec.vm_id)
