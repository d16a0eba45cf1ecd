"""Placer: every filter and its reason, the ranking terms, the index walk vs brute force."""

from __future__ import annotations

import random
from ipaddress import IPv4Network
from typing import Any

import pytest

from federation import placement
from federation.errors import PlacementError, to_stratus_error
from federation.model import (
    HostCapacity,
    NetworkType,
    PlacementRequest,
    PoolCapacity,
    RejectCode,
    SiteCapacity,
)
from federation.placement import Placer, RankWeights
from federation.placement_filters import check
from federation.placement_index import score

NOW = 1_700_000_000.0


def site(name: str, **kw: Any) -> SiteCapacity:
    args: dict[str, Any] = {
        "site": name,
        "hosts": [HostCapacity(16, 32768)],
        "cached_images": {"debian-12"},
        "fetchable_images": None,
        "free_addresses": {"public": 5, "local": 5, "private": 5},
        "location": {"country": "FR"},
        "price_per_hour": 0.05,
        "last_heartbeat": NOW,
    }
    args.update(kw)
    return SiteCapacity(**args)


def req(**kw: Any) -> PlacementRequest:
    args: dict[str, Any] = {"vcpus": 2, "memory_mib": 2048, "image": "debian-12"}
    args.update(kw)
    return PlacementRequest(**args)


def placer(*sites: SiteCapacity, **kw: Any) -> Placer:
    kw.setdefault("clock", lambda: NOW)
    p = Placer(**kw)
    p.update_many(sites)
    return p


# -- filters ----------------------------------------------------------------------------


def test_every_filter_has_its_reason() -> None:
    p = placer(
        site("ok"),
        site("down", available=False),
        site("stale", last_heartbeat=NOW - 600),
        site("de", location={"country": "DE"}),
        site("vo", allowed_vos={"cms"}),
        site("nopublic", free_addresses={"public": 0, "private": 3}),
        site("noimage", cached_images=set(), fetchable_images={"centos-7"}),
        site("small", hosts=[HostCapacity(1, 1024)]),
        heartbeat_timeout=120,
    )
    r = req(network_type=NetworkType.PUBLIC, vo="atlas", location={"country": "FR"})
    decision = p.place(r)
    assert [c.site for c in decision.candidates] == ["ok"]
    reasons = p.explain(r)
    assert {s: str(x.code) for s, x in reasons.items()} == {
        "down": RejectCode.UNAVAILABLE,
        "stale": RejectCode.STALE,
        "de": RejectCode.LOCATION,
        "vo": RejectCode.VO_NOT_ALLOWED,
        "nopublic": RejectCode.NETWORK,
        "noimage": RejectCode.IMAGE,
        "small": RejectCode.CAPACITY,
    }
    assert reasons["down"].message == "site is unavailable"
    assert reasons["stale"].message == "no heartbeat for 600s (limit 120s)"
    assert reasons["de"].message == "location country=DE does not match constraint country == FR"
    assert reasons["vo"].message == "VO not allowed at site (atlas)"
    assert reasons["nopublic"].message == "no free public address"
    assert reasons["noimage"].message == "image debian-12 neither cached nor fetchable"
    assert reasons["small"].message == (
        "no host with 2 free CPUs and 2048 MiB free RAM "
        "(most free CPUs on a host: 1, most free RAM on a host: 1024 MiB)"
    )


def test_missing_location_tag_and_unknown_named_site() -> None:
    p = placer(site("notag", location={}))
    with pytest.raises(PlacementError) as info:
        p.place(req(location={"country": "FR"}))
    assert info.value.rejected == {"notag": "site has no country tag (constraint country == FR)"}
    with pytest.raises(PlacementError) as info:
        p.place(req(sites=("ghost",)))
    assert info.value.rejected == {"ghost": "unknown site"}
    assert info.value.codes == {"ghost": "unknown_site"}


def test_a_site_fits_only_if_one_host_has_cpu_and_ram_at_once() -> None:
    split = site("split", hosts=[HostCapacity(8, 1024), HostCapacity(1, 65536)])
    p = placer(split)
    assert not p.decide(req(vcpus=4, memory_mib=4096)).found
    assert p.decide(req(vcpus=4, memory_mib=1024)).found
    assert p.decide(req(vcpus=1, memory_mib=65536)).found
    assert not p.decide(req(vcpus=2, memory_mib=65536)).found


def test_site_without_hosts_is_rejected_for_capacity() -> None:
    p = placer(site("empty", hosts=[]))
    assert p.explain(req())["empty"].message == "site reports no hypervisor host"


def test_explain_lists_all_failing_filters_of_a_site() -> None:
    p = placer(
        site("bad", hosts=[HostCapacity(1, 512)], cached_images=set(), fetchable_images=set())
    )
    rejection = p.explain(req())["bad"]
    assert rejection.code is RejectCode.IMAGE
    assert "neither cached nor fetchable" in rejection.message
    assert "no host with 2 free CPUs" in rejection.message


def test_vo_filter_matches_vo_or_any_group() -> None:
    p = placer(site("cms-only", allowed_vos={"cms", "/cms/higgs"}))
    assert not p.decide(req(vo="atlas")).found
    assert not p.decide(req()).found  # no VO at all
    assert p.decide(req(vo="cms")).found
    assert p.decide(req(vo="atlas", groups={"/cms/higgs"})).found
    assert p.explain(req())["cms-only"].message == "VO not allowed at site (no VO)"


def test_fetchable_image_passes_and_none_means_any() -> None:
    p = placer(
        site("fetch", cached_images=set(), fetchable_images={"alma-9"}),
        site("any", cached_images=set(), fetchable_images=None),
        site("none", cached_images=set(), fetchable_images=set()),
    )
    decision = p.place(req(image="alma-9"))
    assert {c.site for c in decision.candidates} == {"fetch", "any"}
    assert not any(c.image_cached for c in decision.candidates)


def test_site_constraint_limits_scope_and_pins() -> None:
    p = placer(site("a"), site("b", price_per_hour=0.0), site("c"))
    decision = p.place(req(sites=("a", "c")))
    assert {c.site for c in decision.candidates} == {"a", "c"}
    assert decision.complete
    assert req(sites=("a",)).pinned and not req().pinned


def test_unavailable_site_comes_back_with_its_next_report() -> None:
    p = placer(site("a", available=False))
    assert not p.decide(req()).found
    p.update(site("a"))
    assert p.decide(req()).found
    p.remove("a")
    assert "a" not in p and len(p) == 0
    with pytest.raises(PlacementError, match="the federation has no site"):
        p.place(req())


def test_placement_error_maps_to_409_with_reasons_per_site() -> None:
    p = placer(site("a", hosts=[HostCapacity(1, 512)]), site("b", allowed_vos={"cms"}))
    with pytest.raises(PlacementError) as info:
        p.place(req(vo="atlas"))
    err = to_stratus_error(info.value)
    assert err.status == 409
    assert err.code == "placement_failed"
    assert set(err.to_json()["error"]["details"]["sites"]) == {"a", "b"}
    assert "a: no host with 2 free CPUs" in err.message


# -- ranking ------------------------------------------------------------------------------


def test_each_ranking_term_orders_sites() -> None:
    base = {"hosts": [HostCapacity(16, 32768)], "price_per_hour": 0.05, "cached_images": set()}
    # free capacity: more free CPUs and RAM ranks first
    p = placer(
        site("small", **{**base, "hosts": [HostCapacity(4, 8192)]}),
        site("big", **{**base, "hosts": [HostCapacity(64, 262144)]}),
    )
    assert [c.site for c in p.place(req()).candidates] == ["big", "small"]
    # price: cheaper first
    p = placer(site("dear", **{**base, "price_per_hour": 0.5}), site("cheap", **base))
    assert [c.site for c in p.place(req()).candidates] == ["cheap", "dear"]
    # image cached first
    p = placer(site("cold", **base), site("warm", **{**base, "cached_images": {"debian-12"}}))
    decision = p.place(req())
    assert [c.site for c in decision.candidates] == ["warm", "cold"]
    assert decision.candidates[0].image_cached
    # data locality: the site carrying the data's tags first
    p = placer(
        site("fr", **{**base, "location": {"country": "FR"}}),
        site("de", **{**base, "location": {"country": "DE"}}),
    )
    assert [c.site for c in p.place(req(data_location={"country": "DE"})).candidates] == [
        "de",
        "fr",
    ]
    # user preference, in the order given
    p = placer(site("a", **base), site("b", **base), site("c", **base))
    ranked = p.place(req(preferred_sites=("c", "b"))).candidates
    assert [c.site for c in ranked] == ["c", "b", "a"]
    assert [c.rank for c in ranked] == [1, 2, 3]


def test_default_weights_preference_beats_locality_beats_price_and_capacity() -> None:
    p = placer(
        site("cheap-big", hosts=[HostCapacity(64, 262144)], price_per_hour=0.0),
        site("local", location={"country": "DE"}, price_per_hour=0.4),
        site("preferred", price_per_hour=0.4),
    )
    ranked = p.place(req(data_location={"country": "DE"}, preferred_sites=("preferred",)))
    assert [c.site for c in ranked.candidates] == ["preferred", "local", "cheap-big"]


def test_weights_are_configurable_and_explained() -> None:
    weights = RankWeights(free_capacity=0, price=10, image_cached=0, data_locality=0)
    p = placer(
        site("cheap", price_per_hour=0.0, cached_images=set()),
        site("warm", price_per_hour=0.05),
        weights=weights,
    )
    best = p.place(req()).candidates[0]
    assert best.site == "cheap"
    assert best.components["price"] == pytest.approx(10.0)
    assert best.components["image_cached"] == 0.0
    assert best.score == pytest.approx(sum(best.components.values()))
    assert "price=10.000" in best.explain()
    with pytest.raises(ValueError, match="weight price"):
        RankWeights(price=-1)
    with pytest.raises(ValueError, match="price_reference"):
        RankWeights(price_reference=0)


def test_ties_are_broken_by_site_name_and_candidates_are_bounded() -> None:
    p = placer(*(site(f"s{i}") for i in (3, 1, 4, 2, 0)), max_candidates=3)
    assert [c.site for c in p.place(req()).candidates] == ["s0", "s1", "s2"]


def test_reserve_lowers_free_capacity_until_next_report() -> None:
    p = placer(site("a", hosts=[HostCapacity(4, 4096), HostCapacity(2, 2048)]))
    assert p.reserve("a", 2, 2048)  # takes the tightest host
    assert p.reserve("a", 4, 4096)
    assert not p.reserve("a", 1, 1)
    assert not p.decide(req(vcpus=1, memory_mib=1)).found
    assert not p.reserve("ghost", 1, 1)
    p.update(site("a", hosts=[HostCapacity(4, 4096)]))
    assert p.decide(req()).found


def test_update_replaces_the_previous_report_in_every_index() -> None:
    p = placer(site("a", cached_images={"debian-12"}, location={"country": "FR"}))
    p.update(site("a", cached_images={"alma-9"}, location={"country": "DE"}))
    decision = p.place(req(location={"country": "DE"}, image="alma-9"))
    assert decision.candidates[0].image_cached
    assert not p.decide(req(location={"country": "FR"})).found
    assert p.capacity("a") is not None and p.site_names == ["a"]


# -- the index walk gives exactly the brute-force answer ------------------------------------


def brute_force(p: Placer, r: PlacementRequest) -> list[str]:
    scored = []
    for name in p.site_names:
        if r.sites is not None and name not in r.sites:
            continue
        entry = p._sites[name]
        if check(entry, r, NOW, p.heartbeat_timeout) is None:
            scored.append((-score(p.weights, entry, r), name))
    return [name for _, name in sorted(scored)[: p.max_candidates]]


TAGS = [frozenset(), frozenset(), frozenset({"ssd"}), frozenset({"gpu"}), frozenset({"ssd", "gpu"})]
POOL_NAMES = {"pub": NetworkType.PUBLIC, "lan": NetworkType.LOCAL, "priv": NetworkType.PRIVATE}


def random_pools(rng: random.Random, index: int) -> dict[str, PoolCapacity]:
    """Some of three pools (10.<n>.<index>.0/24), with 0-3 free addresses each."""
    names = rng.sample(sorted(POOL_NAMES), rng.randint(0, 3))
    return {
        name: PoolCapacity(
            POOL_NAMES[name],
            IPv4Network(f"10.{sorted(POOL_NAMES).index(name)}.{index % 256}.0/24"),
            rng.randint(0, 3),
            default=rng.random() < 0.3,
        )
        for name in names
    }


def random_address_needs(rng: random.Random) -> dict[str, Any]:
    roll = rng.random()
    if roll < 0.5:
        return {}
    if roll < 0.7:
        return {"network_type": rng.choice(list(NetworkType))}
    if roll < 0.85:
        return {"network": rng.choice(sorted(POOL_NAMES))}
    address = f"10.{rng.randrange(3)}.{rng.randrange(300) % 256}.9"
    if roll < 0.9:
        return {"address": address}
    if roll < 0.95:
        return {"network": rng.choice(sorted(POOL_NAMES)), "address": address}
    return {"network_type": rng.choice(list(NetworkType)), "address": address}


@pytest.mark.parametrize("seed", range(8))
def test_index_walk_matches_brute_force(seed: int) -> None:
    """Random federations (odd seeds: few distinct values, so many exact ties)."""
    rng = random.Random(seed)
    ties = seed % 2 == 1
    images = [f"img{i}" for i in range(6)]
    countries = ["FR", "DE", "IT"]
    sites = [
        site(
            f"s{i:03d}",
            hosts=[
                HostCapacity(rng.choice([4, 16]), 16384, rng.choice(TAGS))
                if ties
                else HostCapacity(rng.randint(0, 16), rng.randint(0, 64) * 512, rng.choice(TAGS))
                for _ in range(5)
            ],
            cached_images=set(rng.sample(images, rng.randint(0, 3))),
            fetchable_images=set(rng.sample(images, rng.randint(0, 6))),
            location={"country": rng.choice(countries)},
            price_per_hour=rng.choice([0.0, 0.1] if ties else [0.0, 0.01, 0.05, 0.1, 0.3]),
            allowed_vos={"cms"} if rng.random() < 0.2 else None,
            available=rng.random() > 0.05,
            pools=random_pools(rng, i),
            free_addresses={},
        )
        for i in range(300)
    ]
    p = placer(*sites, max_candidates=rng.choice([1, 3, 5, 10]))
    for _ in range(80):
        r = req(
            vcpus=rng.randint(1, 12),
            memory_mib=rng.randint(1, 40) * 512,
            image=rng.choice(images),
            vo=rng.choice([None, "cms", "atlas"]),
            location={"country": rng.choice(countries)} if rng.random() < 0.2 else {},
            data_location={"country": rng.choice(countries)} if rng.random() < 0.4 else {},
            preferred_sites=tuple(f"s{rng.randrange(300):03d}" for _ in range(rng.randint(0, 2))),
            sites=tuple(f"s{rng.randrange(300):03d}" for _ in range(3))
            if rng.random() < 0.1
            else None,
            **random_address_needs(rng),
            host_tags=rng.choice(TAGS) if rng.random() < 0.2 else frozenset(),
            static_images=set(rng.sample(images, rng.randint(0, 2))) if rng.random() < 0.2 else (),
        )
        decision = p.decide(r)
        assert [c.site for c in decision.candidates] == brute_force(p, r)
        assert all(check(p._sites[s], r, NOW, None) is not None for s in decision.rejected)
        if not decision.found:
            assert decision.complete
            assert set(decision.rejected) == set(p.explain(r))


@pytest.mark.parametrize("identical", [False, True], ids=["varied", "identical"])
def test_many_sites_examine_few(identical: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The walk stops early, also when thousands of sites tie (a fresh, uniform federation)."""
    rng = random.Random(1)

    def hosts() -> list[HostCapacity]:
        if identical:
            return [HostCapacity(32, 65536)]
        return [HostCapacity(rng.randint(1, 32), rng.randint(4, 4096) * 64)]

    p = placer(*(site(f"s{i:04d}", hosts=hosts()) for i in range(2000)))
    examined = 0
    original = placement.passes

    def counting(*args: Any) -> bool:
        nonlocal examined
        examined += 1
        return original(*args)

    monkeypatch.setattr(placement, "passes", counting)
    decision = p.decide(req(data_location={"country": "FR"}))
    assert len(decision.candidates) == 5
    assert not decision.complete
    assert examined < 30
    if identical:
        assert [c.site for c in decision.candidates] == [f"s{i:04d}" for i in range(5)]
