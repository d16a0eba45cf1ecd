"""Network XML: isolated (no forward, no DHCP, no DNS), validated, no markup injection."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from site_agent.compute.driver import NetworkSpec
from site_agent.compute.network_xml import network_xml


def test_isolated_network_with_a_host_address() -> None:
    root = ET.fromstring(
        network_xml(NetworkSpec("stratus-public-0b6c2d6e", "st0123456789a", "198.18.0.1", 24))
    )
    assert root.tag == "network"
    assert root.findtext("name") == "stratus-public-0b6c2d6e"
    bridge = root.find("bridge")
    assert bridge is not None and bridge.attrib == {
        "name": "st0123456789a",
        "stp": "off",
        "delay": "0",
    }
    assert root.find("forward") is None  # isolated: libvirt neither routes nor NATs it
    dns = root.find("dns")
    assert dns is not None and dns.get("enable") == "no"  # no dnsmasq
    ip = root.find("ip")
    assert ip is not None and ip.attrib == {"address": "198.18.0.1", "prefix": "24"}
    assert ip.find("dhcp") is None


def test_without_host_address_there_is_no_ip_element() -> None:
    root = ET.fromstring(network_xml(NetworkSpec("n1", "br1")))
    assert root.find("ip") is None and root.find("forward") is None
    assert [child.tag for child in root] == ["name", "bridge", "dns"]


@pytest.mark.parametrize(
    "spec",
    [
        NetworkSpec("bad name", "br0"),
        NetworkSpec("</name><forward mode='nat'/>", "br0"),
        NetworkSpec("n", "br0'/><forward/>"),
        NetworkSpec("n", "bridge-name-too-long"),
        NetworkSpec("n", ""),
        NetworkSpec("n", "br0", "198.18.0.1", None),
        NetworkSpec("n", "br0", "198.18.0.0", 24),  # network address
        NetworkSpec("n", "br0", "198.18.0.255", 24),  # broadcast
        NetworkSpec("n", "br0", "not-an-ip", 24),
        NetworkSpec("n", "br0", "224.0.0.1", 4),
        NetworkSpec("n", "br0", "198.18.0.1", 31),
        NetworkSpec("n", "br0", None, 24),
    ],
)
def test_invalid_specs_are_refused(spec: NetworkSpec) -> None:
    with pytest.raises(ValueError):
        network_xml(spec)
