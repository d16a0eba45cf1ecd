"""Placement decisions per second with 1,000 and 10,000 simulated sites of 100 hosts each.

Usage::

    python benchmarks/placement.py                 # markdown table, ~3 s of decisions per size
    python benchmarks/placement.py --seconds 1 --sites 1000 10000 --hosts 100

Each site gets 100 hosts with random free CPUs (0-64) and RAM (0-256 GiB)
(one in ten tagged ``ssd`` or ``gpu``), a random subset of 20 images cached
and of the rest fetchable, VO restrictions on a tenth of the sites, one of 8
countries, a price and three address pools (``public``, ``local``,
``private``) with random free addresses. Requests mix the Stratus instance
types, images, VOs, a pool type (or none), and sometimes a preferred site, a
data location or a country constraint. With ``--features`` one request in
five also names a pool (with or without an address in it), asks for host
tags or for a static disk image: the filters added with named pools.  The clock starts
after the sites are loaded (a heartbeat's cost is reported separately, per
site update), and the cost of one unplaceable request (every site examined
and explained, what a 409 answer needs) is measured apart.  Everything runs
in one process, no I/O.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from federation.model import (
    HostCapacity,
    NetworkType,
    PlacementRequest,
    PoolCapacity,
    SiteCapacity,
)
from federation.placement import Placer

IMAGES = [f"image-{i}" for i in range(20)]
COUNTRIES = ["FR", "DE", "IT", "ES", "NL", "CH", "PL", "GR"]
VOS = ["atlas", "cms", "lhcb", "biomed", "vo.france-grilles.fr"]
SIZES = [(1, 256), (1, 512), (1, 1024), (2, 2048), (4, 4096), (2, 1024), (4, 2048), (8, 16384)]
HOST_TAGS = [frozenset(), frozenset({"ssd"}), frozenset({"gpu"}), frozenset({"ssd", "gpu"})]
POOLS = {"public": (NetworkType.PUBLIC, 20), "local": (NetworkType.LOCAL, 200)}
POOLS["private"] = (NetworkType.PRIVATE, 1000)


def host(rng: random.Random, tag_rng: random.Random) -> HostCapacity:
    # Tags come from their own generator: the rest of the federation is the same
    # random draw as before tags existed, so rates stay comparable across versions.
    tags = tag_rng.choice(HOST_TAGS[1:]) if tag_rng.random() < 0.1 else frozenset()
    return HostCapacity(rng.randint(0, 64), rng.randint(0, 256) * 1024, tags)


def make_site(rng: random.Random, index: int, hosts: int) -> SiteCapacity:
    tag_rng = random.Random(index)
    cached = frozenset(rng.sample(IMAGES, rng.randint(2, 8)))
    fetchable = frozenset(i for i in IMAGES if i not in cached and rng.random() < 0.7)
    restricted = rng.random() < 0.1
    return SiteCapacity(
        site=f"site-{index:05d}",
        hosts=[host(rng, tag_rng) for _ in range(hosts)],
        cached_images=cached,
        fetchable_images=fetchable,
        pools={
            name: PoolCapacity(
                kind,
                IPv4Network(
                    f"10.{number}.{index % 256}.0/{22 if size > 200 else 24}", strict=False
                ),
                rng.randint(10 if name == "private" else 0, size),
                default=name == "private",
            )
            for number, (name, (kind, size)) in enumerate(POOLS.items())
        },
        allowed_vos=frozenset(rng.sample(VOS, 2)) if restricted else None,
        location={"country": rng.choice(COUNTRIES)},
        price_per_hour=round(rng.uniform(0.0, 0.2), 4),
    )


def features(rng: random.Random, n_sites: int) -> dict[str, object]:
    """One of the newer requirements: a named pool, an address at one site, host tags or a
    static disk."""
    roll = rng.random()
    if roll < 0.4:
        return {"network": rng.choice(list(POOLS)), "network_type": None}
    if roll < 0.5:  # an address is asked for at a named site (its pool's CIDR)
        index = rng.randrange(n_sites)
        return {
            "network": "private",
            "network_type": None,
            "address": f"10.2.{index % 256}.7",
            "sites": (f"site-{index:05d}",),
        }
    if roll < 0.75:
        return {"host_tags": rng.choice(HOST_TAGS[1:3])}
    return {"static_images": frozenset({rng.choice(IMAGES)})}


def make_requests(
    rng: random.Random, n_sites: int, count: int, *, with_features: bool = False
) -> list[PlacementRequest]:
    out = []
    for _ in range(count):
        vcpus, memory = rng.choice(SIZES)
        roll = rng.random()
        args: dict[str, Any] = {  # drawn in the same order as before named pools existed
            "vcpus": vcpus,
            "memory_mib": memory,
            "image": rng.choice(IMAGES),
            "network_type": rng.choice([None, NetworkType.PUBLIC, NetworkType.PRIVATE]),
            "vo": rng.choice(VOS),
            "preferred_sites": (f"site-{rng.randrange(n_sites):05d}",) if roll < 0.2 else (),
            "data_location": {"country": rng.choice(COUNTRIES)} if 0.2 <= roll < 0.5 else {},
            "location": {"country": rng.choice(COUNTRIES)} if 0.5 <= roll < 0.6 else {},
        }
        if with_features and rng.random() < 0.2:
            args.update(features(rng, n_sites))
        out.append(PlacementRequest(**args))
    return out


@dataclass
class Result:
    sites: int
    hosts: int
    decisions: int
    seconds: float
    load_seconds: float
    found: int
    unplaceable_ms: float

    @property
    def rate(self) -> float:
        return self.decisions / self.seconds

    @property
    def update_us(self) -> float:
        return self.load_seconds / self.sites * 1e6


@dataclass
class _Setup:
    placer: Placer
    requests: list[PlacementRequest]
    result: Result


def _setup(n_sites: int, hosts: int, seed: int, with_features: bool) -> _Setup:
    rng = random.Random(seed)
    caps = [make_site(rng, i, hosts) for i in range(n_sites)]
    placer = Placer()
    start = time.perf_counter()
    placer.update_many(caps)
    load = time.perf_counter() - start
    requests = make_requests(rng, n_sites, 2000, with_features=with_features)
    return _Setup(placer, requests, Result(n_sites, hosts, 0, 0.0, load, 0, 0.0))


def _slice(setup: _Setup, seconds: float) -> None:
    """Decide for about ``seconds``, adding to ``setup.result``."""
    result, requests, placer = setup.result, setup.requests, setup.placer
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        offset = result.decisions % len(requests)
        for req in requests[offset : offset + 50]:
            result.found += placer.decide(req).found
            result.decisions += 1
    result.seconds += time.perf_counter() - start


def run_all(
    sizes: list[int],
    hosts: int = 100,
    seconds: float = 3.0,
    seed: int = 42,
    *,
    with_features: bool = False,
) -> list[Result]:
    """Measure every size for ``seconds`` in all, in interleaved 0.1 s slices.

    Interleaving makes the sizes share any background load on the machine
    equally, so their ratio is meaningful even on a busy host.
    """
    setups = [_setup(n, hosts, seed, with_features) for n in sizes]
    slices = max(1, round(seconds / 0.1))
    for _ in range(slices):
        for setup in setups:
            _slice(setup, seconds / slices)
    impossible = PlacementRequest(vcpus=1000, memory_mib=1, image=IMAGES[0])
    for setup in setups:
        # The 409 path: nothing fits, so every site is examined and explained.
        rounds = 3
        start = time.perf_counter()
        for _ in range(rounds):
            if setup.placer.decide(impossible).found:
                raise AssertionError("an impossible request was placed")
        setup.result.unplaceable_ms = (time.perf_counter() - start) / rounds * 1000
    return [s.result for s in setups]


def run(n_sites: int, hosts: int = 100, seconds: float = 3.0, seed: int = 42) -> Result:
    """Load ``n_sites`` sites and make decisions for ``seconds``; returns the measured rate."""
    return run_all([n_sites], hosts, seconds, seed)[0]


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0, help="decision time per size")
    parser.add_argument(
        "--features", action="store_true", help="add named pools, host tags, static disks"
    )
    parser.add_argument("--write-doc", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    results = run_all(args.sites, args.hosts, args.seconds, with_features=args.features)
    lines = [
        "| sites | hosts/site | decisions | decisions/s | placed | update µs/site "
        "| unplaceable (409) ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.sites:,} | {r.hosts} | {r.decisions:,} | {r.rate:,.0f} | "
            f"{r.found / r.decisions:.0%} | {r.update_us:.0f} | {r.unplaceable_ms:.1f} |"
        )
    if len(results) >= 2:
        ratio = results[-1].rate / results[0].rate
        lines.append(
            f"\nratio {results[-1].sites:,} / {results[0].sites:,} sites: **{ratio:.2f}** "
            "(target >= 0.5; target rate at 1,000 sites >= 200/s)"
        )
    report = "\n".join(lines)
    print(report)
    if args.write_doc:
        from benchmarks.common import write_section

        command = "python benchmarks/placement.py --write-doc"
        write_section("placement", f"## Placement decisions (`{command}`)\n\n{report}\n")
    return results


if __name__ == "__main__":
    main()
