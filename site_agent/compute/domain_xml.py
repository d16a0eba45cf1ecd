"""libvirt domain and disk XML built from typed specs with ElementTree.

Every value that reaches the XML (paths, kernel command line, network names,
MACs, ids) is set as element text or attribute value through ElementTree,
which escapes it; nothing is ever formatted into an XML string. On top of
the escaping, the values are validated, so that a spec that libvirt would
reject or misread fails early with ``ValueError``:

* ``vm_id`` must be a UUID in canonical form (it is the libvirt ``<uuid>``
  and the name suffix, ``stratus-<uuid>``);
* text must be XML 1.0 characters (ElementTree would otherwise write control
  characters that make the document ill-formed);
* device names, buses, formats and MACs must be from the expected sets.

The serial console is ``ttyS0`` on a ``pty`` whose output libvirt's
``virtlogd`` copies to ``spec.console_log`` (``<log file=... append='on'/>``),
so the log is kept, and appended to, across reboots and restarts of the
domain; the pty stays available for ``virsh console``.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from site_agent.compute.driver import DOMAIN_PREFIX, Accel, DiskSpec, DomainSpec, NicSpec

#: XML namespace of the ``<metadata>`` child that marks a domain as Stratus's.
METADATA_NS = "http://stratus.invalid/xmlns/compute/1"
METADATA_PREFIX = "stratus"

DOMAIN_TYPES: dict[Accel, str] = {Accel.KVM: "kvm", Accel.TCG: "qemu", Accel.TEST: "test"}

DISK_FORMATS = frozenset({"qcow2", "raw"})
DISK_DEVICES = frozenset({"disk", "cdrom"})
DISK_BUSES = frozenset({"virtio", "sata", "scsi", "ide", "usb"})

_TARGET_RE = re.compile(r"(vd|sd|hd|xvd)[a-z]{1,2}")
_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_NETWORK_RE = re.compile(r"[A-Za-z0-9_.+-]{1,64}")
# XML 1.0 Char production (tab, LF and CR allowed; other C0 controls, surrogates, FFFE/FFFF not).
_XML_BAD_CHARS_RE = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

ET.register_namespace(METADATA_PREFIX, METADATA_NS)


def _text(value: str, what: str) -> str:
    """``value`` if it is XML-safe text, else ``ValueError``."""
    if _XML_BAD_CHARS_RE.search(value):
        raise ValueError(f"{what} contains characters not allowed in XML")
    return value


def _path(value: Path, what: str) -> str:
    text = _text(str(value), what)
    if not Path(text).is_absolute():
        raise ValueError(f"{what} must be an absolute path: {text!r}")
    return text


def check_vm_id(vm_id: str) -> str:
    """Return ``vm_id`` if it is a canonical lower-case UUID string, else raise ``ValueError``."""
    try:
        canonical = str(uuid.UUID(vm_id))
    except (ValueError, TypeError, AttributeError):
        raise ValueError(f"vm_id is not a UUID: {vm_id!r}") from None
    if canonical != vm_id:
        raise ValueError(f"vm_id must be a canonical lower-case UUID: {vm_id!r}")
    return vm_id


def _disk_element(disk: DiskSpec) -> ET.Element:
    if disk.format not in DISK_FORMATS:
        raise ValueError(f"disk format must be one of {sorted(DISK_FORMATS)}: {disk.format!r}")
    if disk.device not in DISK_DEVICES:
        raise ValueError(f"disk device must be one of {sorted(DISK_DEVICES)}: {disk.device!r}")
    if disk.bus not in DISK_BUSES:
        raise ValueError(f"disk bus must be one of {sorted(DISK_BUSES)}: {disk.bus!r}")
    if not _TARGET_RE.fullmatch(disk.target):
        raise ValueError(f"disk target is not a device name like 'vdb': {disk.target!r}")
    if disk.device == "cdrom" and disk.bus == "virtio":
        raise ValueError("a cdrom cannot be on the virtio bus (use a read-only disk or sata)")
    element = ET.Element("disk", type="file", device=disk.device)
    ET.SubElement(element, "driver", name="qemu", type=disk.format)
    ET.SubElement(element, "source", file=_path(disk.path, "disk path"))
    ET.SubElement(element, "target", dev=disk.target, bus=disk.bus)
    if disk.readonly or disk.device == "cdrom":
        ET.SubElement(element, "readonly")
    if disk.shareable:
        ET.SubElement(element, "shareable")
    return element


def _nic_element(nic: NicSpec) -> ET.Element:
    mac = nic.mac.lower()
    if not _MAC_RE.fullmatch(mac):
        raise ValueError(f"not a MAC address: {nic.mac!r}")
    if int(mac[:2], 16) & 1:
        raise ValueError(f"MAC address is multicast: {nic.mac!r}")
    if not _NETWORK_RE.fullmatch(nic.network):
        raise ValueError(f"not a libvirt network name: {nic.network!r}")
    element = ET.Element("interface", type="network")
    ET.SubElement(element, "source", network=nic.network)
    ET.SubElement(element, "mac", address=mac)
    ET.SubElement(element, "model", type="virtio")
    return element


def _serialise(element: ET.Element) -> str:
    return ET.tostring(element, encoding="unicode")


def metadata_owner(element_xml: str) -> str | None:
    """The ``owner`` attribute of a domain's Stratus metadata element, if present."""
    try:
        element = ET.fromstring(element_xml)
    except ET.ParseError:
        return None
    return element.get("owner")


def disk_xml(disk: DiskSpec) -> str:
    """The ``<disk>`` device XML for ``disk`` (file-backed, qemu driver).

    Used both inside the domain and for hot-plug (attach/detach). Raises
    ``ValueError`` for a format, device, bus or target outside the supported
    sets, a relative path, or a path with characters XML cannot carry.
    """
    return _serialise(_disk_element(disk))


def domain_xml(
    spec: DomainSpec, accel: Accel, *, emulator: str | None = None, owner: str = ""
) -> str:
    """The libvirt domain XML for ``spec`` on a host with accelerator ``accel``.

    The domain type is ``kvm`` (KVM), ``qemu`` (TCG) or ``test`` (libvirt's
    test driver); the name is ``stratus-<vm_id>`` and the libvirt UUID is the
    VM id. Guests get an i440fx ``pc`` machine with ACPI and APIC, optional
    direct kernel boot, the spec's disks and NICs (virtio), a serial console
    on ttyS0 logged to ``spec.console_log`` (appending across reboots), no
    graphics, and a ``<metadata>`` entry in the Stratus namespace carrying
    the VM id and ``owner`` (the site instance that made it). Power-off and
    crash destroy the running instance (the definition stays); reboot
    restarts it.

    Raises ``ValueError`` for an invalid spec (see the module docstring).
    """
    vm_id = check_vm_id(spec.vm_id)
    if spec.vcpus < 1:
        raise ValueError(f"vcpus must be at least 1: {spec.vcpus}")
    if spec.memory_mib < 1:
        raise ValueError(f"memory_mib must be at least 1: {spec.memory_mib}")
    targets = [d.target for d in spec.disks]
    if len(set(targets)) != len(targets):
        raise ValueError(f"duplicate disk targets: {targets}")
    if (spec.initrd is not None or spec.cmdline is not None) and spec.kernel is None:
        raise ValueError("initrd and cmdline need a kernel (direct kernel boot)")

    domain = ET.Element("domain", type=DOMAIN_TYPES[accel])
    ET.SubElement(domain, "name").text = DOMAIN_PREFIX + vm_id
    ET.SubElement(domain, "uuid").text = vm_id
    metadata = ET.SubElement(domain, "metadata")
    ET.SubElement(metadata, f"{{{METADATA_NS}}}vm", id=vm_id, owner=owner)
    ET.SubElement(domain, "memory", unit="MiB").text = str(int(spec.memory_mib))
    ET.SubElement(domain, "vcpu").text = str(int(spec.vcpus))

    os_el = ET.SubElement(domain, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    if spec.kernel is not None:
        ET.SubElement(os_el, "kernel").text = _path(spec.kernel, "kernel path")
        if spec.initrd is not None:
            ET.SubElement(os_el, "initrd").text = _path(spec.initrd, "initrd path")
        if spec.cmdline is not None:
            ET.SubElement(os_el, "cmdline").text = _text(spec.cmdline, "kernel cmdline")
    else:
        ET.SubElement(os_el, "boot", dev="hd")

    features = ET.SubElement(domain, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    ET.SubElement(domain, "clock", offset="utc")
    ET.SubElement(domain, "on_poweroff").text = "destroy"
    ET.SubElement(domain, "on_reboot").text = "restart"
    ET.SubElement(domain, "on_crash").text = "destroy"

    devices = ET.SubElement(domain, "devices")
    if emulator is not None:
        ET.SubElement(devices, "emulator").text = _path(Path(emulator), "emulator path")
    for disk in spec.disks:
        devices.append(_disk_element(disk))
    for nic in spec.nics:
        devices.append(_nic_element(nic))

    serial = ET.SubElement(devices, "serial", type="pty")
    if spec.console_log is not None:
        ET.SubElement(serial, "log", file=_path(spec.console_log, "console log path"), append="on")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")
    return _serialise(domain)
