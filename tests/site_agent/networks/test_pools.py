"""Address pools: addresses handed out, names of the hypervisor networks, config checks."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest
from pydantic import ValidationError

from site_agent.config import NetworkPoolConfig, SiteConfig
from site_agent.networks.errors import AddressInUse, AddressOutsidePool, PoolExhausted, UnknownPool
from site_agent.networks.pools import NetworkPools, libvirt_names
from site_agent.networks.service import random_mac

INSTANCE = "0b6c2d6e-3f1a-4c55-9a7e-0d4f3c2b1a00"


def pool_config(**overrides: Any) -> NetworkPoolConfig:
    data: dict[str, Any] = {
        "name": "public",
        "type": "public",
        "cidr": "198.18.10.0/29",
        "gateway": "198.18.10.1",
        "dns": ["198.18.10.1"],
    }
    return NetworkPoolConfig.model_validate({**data, **overrides})


def test_automatic_addresses_skip_gateway_host_address_and_fixed() -> None:
    pool = NetworkPools(
        [pool_config(host_address="198.18.10.2", fixed=["198.18.10.6"])], INSTANCE
    ).get(None)
    assert [str(a) for a in pool.automatic()] == ["198.18.10.3", "198.18.10.4", "198.18.10.5"]
    assert pool.size == 4  # three automatic + one fixed
    assert pool.contains(IPv4Address("198.18.10.6"))  # fixed: on request
    assert not pool.contains(IPv4Address("198.18.10.1"))  # gateway
    assert not pool.contains(IPv4Address("198.18.10.7"))  # broadcast


def test_pick_lowest_free_then_exhausted() -> None:
    pool = NetworkPools([pool_config(fixed=["198.18.10.6"])], INSTANCE).get("public")
    leased: set[str] = set()
    for expected in ("198.18.10.2", "198.18.10.3", "198.18.10.4", "198.18.10.5"):
        picked = pool.pick(leased)
        assert str(picked) == expected
        leased.add(str(picked))
    with pytest.raises(PoolExhausted, match=r"^no free address in pool public$"):
        pool.pick(leased)
    # The fixed address is still there for whoever asks for it by name.
    assert str(pool.pick(leased, IPv4Address("198.18.10.6"))) == "198.18.10.6"


def test_requested_addresses_must_be_in_the_pool_and_free() -> None:
    pool = NetworkPools([pool_config(range_start="198.18.10.3", range_end="198.18.10.4")], INSTANCE)
    public = pool.get("public")
    assert public.size == 2
    with pytest.raises(AddressOutsidePool, match=r"198\.18\.10\.5 is not in pool public"):
        public.pick(set(), IPv4Address("198.18.10.5"))
    with pytest.raises(AddressOutsidePool):
        public.pick(set(), IPv4Address("10.0.0.1"))
    with pytest.raises(AddressInUse, match="already leased"):
        public.pick({"198.18.10.3"}, IPv4Address("198.18.10.3"))


def test_unknown_pool_and_site_without_networks() -> None:
    with pytest.raises(UnknownPool, match=r"no network 'dmz'.*known: public"):
        NetworkPools([pool_config()], INSTANCE).get("dmz")
    with pytest.raises(UnknownPool, match="no networks"):
        NetworkPools([], INSTANCE).get(None)


def test_default_pool_is_the_first_configured() -> None:
    pools = NetworkPools(
        [pool_config(name="local", type="local"), pool_config(cidr="198.18.11.0/24", gateway=None)],
        INSTANCE,
    )
    assert pools.get(None).name == "local"
    assert [p.name for p in pools] == ["local", "public"]


def test_hypervisor_names_are_per_site_instance_and_short() -> None:
    config = pool_config()
    name, bridge = libvirt_names(config, INSTANCE)
    other_name, other_bridge = libvirt_names(config, "9f0c2d6e-3f1a-4c55-9a7e-0d4f3c2b1a00")
    assert name == "stratus-public-0b6c2d6e"
    assert (name, bridge) != (other_name, other_bridge)
    assert len(bridge) <= 15 and len(other_bridge) <= 15
    explicit = libvirt_names(pool_config(libvirt_network="br-pub", bridge="virbr9"), INSTANCE)
    assert explicit == ("br-pub", "virbr9")


def test_guest_config_and_network_spec() -> None:
    pool = NetworkPools([pool_config(host_address="198.18.10.2")], INSTANCE).get(None)
    config = pool.guest_config("198.18.10.3", "02:00:00:00:00:01")
    assert (config.cidr, config.gateway, config.dns) == (
        "198.18.10.3/29",
        "198.18.10.1",
        ("198.18.10.1",),
    )
    spec = pool.network_spec()
    assert (spec.host_address, spec.prefix) == ("198.18.10.2", 29)
    no_host = NetworkPools([pool_config()], INSTANCE).get(None).network_spec()
    assert (no_host.host_address, no_host.prefix) == (None, None)


def test_macs_are_locally_administered_unicast_and_random() -> None:
    macs = {random_mac() for _ in range(200)}
    assert len(macs) == 200
    for mac in macs:
        first = int(mac[:2], 16)
        assert first & 0x02 and not first & 0x01, mac


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"gateway": "198.18.99.1"}, "gateway 198.18.99.1 is not a host address"),
        ({"fixed": ["198.18.10.0"]}, "fixed 198.18.10.0 is not a host address"),
        ({"range_start": "198.18.10.5", "range_end": "198.18.10.3"}, "is after range_end"),
        ({"cidr": "198.18.10.0/31"}, "too small"),
        ({"managed": False}, "libvirt_network"),
        ({"bridge": "a-very-long-bridge-name"}, "bridge"),
        ({"name": "Public!"}, "name"),
        ({"type": "dmz"}, "type"),
        ({"cidr": "198.18.10.1/29"}, "cidr"),
    ],
)
def test_bad_pool_configs_are_refused(overrides: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        pool_config(**overrides)


def test_pool_names_must_be_unique() -> None:
    with pytest.raises(ValidationError, match="duplicate network name: public"):
        SiteConfig.model_validate(
            {
                "hosts": [{"uri": "fake://a"}],
                "networks": [pool_config().model_dump(), pool_config().model_dump()],
            }
        )
