"""Placement filters of a create body's site resources: named pools, pool types, addresses,
host tags and static disk images; the pool a candidate gets; reservations; heartbeats."""

from __future__ import annotations

from ipaddress import IPv4Network
from typing import Any

import pytest

from core.resources.networks import NetworkType
from core.site_report import HostReport, PoolReport, SiteReport
from federation.capacity import capacity_from_report
from federation.model import HostCapacity, PlacementRequest, PoolCapacity, RejectCode, SiteCapacity
from federation.placement import Placer

NOW = 1_700_000_000.0
LAN = PoolCapacity(NetworkType.LOCAL, IPv4Network("10.1.0.0/24"), 5)
PUB = PoolCapacity(NetworkType.PUBLIC, IPv4Network("192.0.2.0/28"), 3)
PUB2 = PoolCapacity(NetworkType.PUBLIC, IPv4Network("198.51.100.0/28"), 2, default=True)


def site(name: str, **kw: Any) -> SiteCapacity:
    args: dict[str, Any] = {
        "site": name,
        "hosts": [HostCapacity(16, 32768)],
        "cached_images": {"debian-12", "data-disk"},
        "fetchable_images": set(),
        "pools": {"lan": LAN, "pub": PUB},
        "last_heartbeat": NOW,
    }
    args.update(kw)
    return SiteCapacity(**args)


def req(**kw: Any) -> PlacementRequest:
    args: dict[str, Any] = {"vcpus": 2, "memory_mib": 2048, "image": "debian-12"}
    args.update(kw)
    return PlacementRequest(**args)


def placer(*sites: SiteCapacity) -> Placer:
    p = Placer(clock=lambda: NOW)
    p.update_many(sites)
    return p


def outcome(p: Placer, r: PlacementRequest) -> dict[str, tuple[str, str | None]]:
    """``{site: (code or "ok", message or the pool it gets)}`` for every site."""
    decision = p.decide(r)
    out: dict[str, tuple[str, str | None]] = {
        c.site: ("ok", c.network) for c in decision.candidates
    }
    for name, rejection in p.explain(r).items():
        out[name] = (str(rejection.code), rejection.message)
    return out


def test_a_named_pool_must_exist_and_have_a_free_address() -> None:
    p = placer(
        site("has-it"),
        site("without", pools={"pub": PUB}),
        site("full", pools={"lan": PoolCapacity(NetworkType.LOCAL, IPv4Network("10.1.0.0/24"), 0)}),
    )
    assert outcome(p, req(network="lan")) == {
        "has-it": ("ok", "lan"),
        "without": (RejectCode.NO_POOL, "no pool named lan"),
        "full": (RejectCode.NO_FREE_ADDRESS, "no free address in pool lan"),
    }


def test_a_named_pool_of_another_type_than_asked_is_refused() -> None:
    p = placer(site("a"))
    assert outcome(p, req(network="lan", network_type=NetworkType.PUBLIC)) == {
        "a": (RejectCode.NO_POOL, "pool lan is local, not public")
    }
    assert outcome(p, req(network="pub", network_type="public")) == {"a": ("ok", "pub")}


def test_an_address_must_lie_in_the_pool() -> None:
    full_lan = PoolCapacity(NetworkType.LOCAL, IPv4Network("10.1.0.0/24"), 0)
    elsewhere = PoolCapacity(NetworkType.LOCAL, IPv4Network("10.9.0.0/24"), 5)
    p = placer(site("in"), site("elsewhere", pools={"lan": elsewhere}))
    assert outcome(p, req(network="lan", address="10.1.0.20")) == {
        "in": ("ok", "lan"),
        "elsewhere": (RejectCode.ADDRESS, "address 10.1.0.20 is not in pool lan (10.9.0.0/24)"),
    }
    # A pool with no free address may still hold a fixed address: only the site knows.
    assert outcome(placer(site("fixed", pools={"lan": full_lan})), req(address="10.1.0.9")) == {
        "fixed": ("ok", "lan")
    }


def test_an_address_alone_is_checked_against_the_default_pool() -> None:
    p = placer(
        site("first-is-default", pools={"lan": LAN, "pub": PUB}),
        site("flagged", pools={"pub": PUB, "pub2": PUB2}),
        site("no-pools", pools={}),
    )
    assert p.capacity("flagged").default_pool == "pub2"  # type: ignore[union-attr]
    assert outcome(p, req(address="10.1.0.30")) == {
        "first-is-default": ("ok", "lan"),
        "flagged": (RejectCode.ADDRESS, "address 10.1.0.30 is not in pool pub2 (198.51.100.0/28)"),
        "no-pools": (RejectCode.NO_POOL, "site has no address pool (address 10.1.0.30 requested)"),
    }


def test_a_pool_type_gets_the_default_else_the_first_pool_of_that_type_with_room() -> None:
    empty_default = PoolCapacity(NetworkType.PUBLIC, IPv4Network("198.51.100.0/28"), 0, True)
    p = placer(
        site("default-wins", pools={"pub": PUB, "pub2": PUB2}),
        site("first-with-room", pools={"pub2": empty_default, "pub": PUB}),
        site("only-lan", pools={"lan": LAN}),
        site("counts-only", pools={}, free_addresses={NetworkType.PUBLIC: 4}),
    )
    assert outcome(p, req(network_type=NetworkType.PUBLIC)) == {
        "default-wins": ("ok", "pub2"),
        "first-with-room": ("ok", "pub"),
        "only-lan": (RejectCode.NETWORK, "no free public address"),
        "counts-only": ("ok", None),  # a site reporting no pools picks one itself
    }


def test_a_pool_type_with_an_address_gets_the_pool_holding_it() -> None:
    p = placer(site("a", pools={"pub": PUB, "pub2": PUB2}), site("b", pools={"lan": LAN}))
    assert outcome(p, req(network_type=NetworkType.PUBLIC, address="192.0.2.5")) == {
        "a": ("ok", "pub"),
        "b": (RejectCode.ADDRESS, "address 192.0.2.5 is not in any public pool"),
    }


def test_host_tags_need_one_host_with_every_tag_and_the_room() -> None:
    p = placer(
        site("tagged", hosts=[HostCapacity(64, 65536), HostCapacity(4, 4096, {"ssd", "gpu"})]),
        site("split", hosts=[HostCapacity(8, 8192, {"ssd"}), HostCapacity(8, 8192, {"gpu"})]),
        site("small", hosts=[HostCapacity(1, 512, {"ssd", "gpu"}), HostCapacity(64, 65536)]),
    )
    result = outcome(p, req(host_tags={"ssd", "gpu"}))
    assert result == {
        "tagged": ("ok", None),
        "split": (RejectCode.HOST_TAGS, "no host with tags gpu, ssd"),
        "small": (
            RejectCode.CAPACITY,
            "no host with tags gpu, ssd has 2 free CPUs and 2048 MiB free RAM "
            "(most free CPUs on such a host: 1, most free RAM: 512 MiB)",
        ),
    }
    assert p.decide(req(host_tags={"ssd"})).found
    assert outcome(p, req(vcpus=8, memory_mib=8192, host_tags={"ssd", "gpu"}))["tagged"][0] == (
        RejectCode.CAPACITY
    )


def test_every_static_disk_image_must_be_cached_or_fetchable() -> None:
    p = placer(
        site("both", fetchable_images={"tools"}),
        site("one", cached_images={"debian-12"}, fetchable_images={"tools"}),
    )
    assert outcome(p, req(static_images={"data-disk", "tools"})) == {
        "both": ("ok", None),
        "one": (RejectCode.STATIC_IMAGE, "static disk image data-disk not available"),
    }


def test_explain_names_every_failing_new_filter() -> None:
    p = placer(site("bad", hosts=[HostCapacity(1, 512)], cached_images={"debian-12"}))
    (rejection,) = p.explain(req(network="nope", static_images={"x"}, host_tags={"ssd"})).values()
    assert rejection.code is RejectCode.NO_POOL
    assert rejection.message == (
        "no pool named nope; static disk image x not available; no host with tags ssd"
    )


def test_reserving_takes_a_tagged_host_and_an_address_of_the_pool() -> None:
    one_free = PoolCapacity(NetworkType.LOCAL, IPv4Network("10.1.0.0/24"), 1)
    report = site("a", hosts=[HostCapacity(8, 8192), HostCapacity(4, 4096, {"ssd"})])
    p = placer(SiteCapacity(**{**vars(report), "pools": {"lan": one_free}, "free_addresses": {}}))
    assert p.reserve("a", 4, 4096, host_tags=frozenset({"ssd"}), network="lan")
    assert not p.decide(req(host_tags={"ssd"})).found  # the tagged host is full now
    assert p.decide(req()).found  # the untagged one was not touched
    assert outcome(p, req(network="lan")) == {
        "a": (RejectCode.NO_FREE_ADDRESS, "no free address in pool lan")
    }
    assert outcome(p, req(network_type=NetworkType.LOCAL)) == {
        "a": (RejectCode.NETWORK, "no free local address")
    }
    assert not p.reserve("a", 1, 1, host_tags=frozenset({"gpu"}))
    p.update(report)  # the next heartbeat replaces the estimate
    assert p.decide(req(host_tags={"ssd"}, network="lan")).found


def test_capacity_from_a_heartbeat() -> None:
    report = SiteReport(
        site="site-a",
        public_url="https://site-a.example:8440/",
        hosts=[
            HostReport(name="fake://a", free_cpus=8, free_memory_mib=8192, tags=["ssd"]),
            HostReport(name="fake://b", free_cpus=2, free_memory_mib=1024, simulated=True),
        ],
        cached_images=["debian-12"],
        fetchable_images=None,
        networks=[
            PoolReport(name="pub", type="public", cidr="192.0.2.0/28", free=3),
            PoolReport(name="lan", type="local", cidr="10.1.0.0/24", free=7, default=True),
        ],
        free_addresses={"public": 3, "local": 7},
        allowed_vos=["atlas"],
        location={"country": "FR"},
        price_per_hour=0.02,
    )
    cap = capacity_from_report(report, at=NOW - 5)
    assert cap.hosts == (HostCapacity(8, 8192, {"ssd"}), HostCapacity(2, 1024))
    assert list(cap.pools) == ["pub", "lan"] and cap.default_pool == "lan"
    assert cap.pools["pub"] == PoolCapacity(NetworkType.PUBLIC, IPv4Network("192.0.2.0/28"), 3)
    assert cap.free_addresses == {NetworkType.PUBLIC: 3, NetworkType.LOCAL: 7}
    assert cap.fetchable_images is None and cap.allowed_vos == frozenset({"atlas"})
    assert (cap.last_heartbeat, cap.price_per_hour, cap.location) == (
        NOW - 5,
        0.02,
        {"country": "FR"},
    )
    decision = placer(cap).decide(req(address="10.1.0.4", host_tags={"ssd"}, vo="atlas"))
    assert [c.network for c in decision.candidates] == ["lan"]
    bad = report.model_copy(
        update={"networks": [PoolReport(name="x", type="local", cidr="nope", free=1)]}
    )
    with pytest.raises(ValueError):
        capacity_from_report(bad)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"network": "Bad Name"}, "not a pool name"),
        ({"address": "10.1.0.300"}, "'10.1.0.300' is not an IPv4 address"),
        ({"network_type": "wan"}, "'wan' is not a valid NetworkType"),
    ],
)
def test_request_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        req(**kwargs)
