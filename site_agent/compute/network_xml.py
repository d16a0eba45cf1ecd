"""libvirt network XML built from a typed :class:`NetworkSpec` with ElementTree.

Stratus networks are isolated: no ``<forward>`` element (so libvirt neither
routes nor NATs them), no DHCP range and DNS turned off (so libvirt starts
no dnsmasq): guests get their static address from the cidata seed's
``network-config``. Spanning tree is off and the forward delay zero, so a
guest's port passes traffic at once.

Values are validated before anything is built (``ValueError`` otherwise):

* ``name``: 1-64 of ``[A-Za-z0-9_.+-]``;
* ``bridge``: 1-15 of ``[A-Za-z0-9_-]`` (Linux limits interface names to 15);
* ``host_address``: an IPv4 unicast address, with ``prefix`` 1-30, that is
  neither the network nor the broadcast address of its subnet.
"""

from __future__ import annotations

import ipaddress
import re
import xml.etree.ElementTree as ET

from site_agent.compute.driver import NetworkSpec

_NAME_RE = re.compile(r"[A-Za-z0-9_.+-]{1,64}")
_BRIDGE_RE = re.compile(r"[A-Za-z0-9_-]{1,15}")


def check_network_spec(spec: NetworkSpec) -> NetworkSpec:
    """Return ``spec`` if every field is acceptable, else raise ``ValueError``."""
    if not _NAME_RE.fullmatch(spec.name):
        raise ValueError(f"not a network name (1-64 of A-Za-z0-9_.+-): {spec.name!r}")
    if not _BRIDGE_RE.fullmatch(spec.bridge):
        raise ValueError(f"not a bridge name (1-15 of A-Za-z0-9_-): {spec.bridge!r}")
    if spec.host_address is None:
        if spec.prefix is not None:
            raise ValueError("prefix without host_address")
        return spec
    if isinstance(spec.prefix, bool) or not isinstance(spec.prefix, int):
        raise ValueError("host_address needs an integer prefix")
    if not 1 <= spec.prefix <= 30:
        raise ValueError(f"prefix must be 1-30: {spec.prefix}")
    try:
        interface = ipaddress.IPv4Interface(f"{spec.host_address}/{spec.prefix}")
    except ValueError as exc:
        raise ValueError(f"host_address is not an IPv4 address: {spec.host_address!r}") from exc
    address, net = interface.ip, interface.network
    if address.is_multicast or address.is_unspecified:
        raise ValueError(f"host_address is not a unicast address: {address}")
    if address in (net.network_address, net.broadcast_address):
        raise ValueError(f"host_address {address} is the network or broadcast address of {net}")
    return spec


def network_xml(spec: NetworkSpec) -> str:
    """The ``<network>`` XML of the isolated network ``spec`` (see the module docstring)."""
    check_network_spec(spec)
    network = ET.Element("network")
    ET.SubElement(network, "name").text = spec.name
    ET.SubElement(network, "bridge", name=spec.bridge, stp="off", delay="0")
    ET.SubElement(network, "dns", enable="no")
    if spec.host_address is not None:
        ET.SubElement(
            network,
            "ip",
            address=str(ipaddress.IPv4Address(spec.host_address)),
            prefix=str(int(spec.prefix or 0)),
        )
    return ET.tostring(network, encoding="unicode")
