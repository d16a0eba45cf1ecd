"""Failover: candidates tried in order, every attempt and its reason recorded."""

from __future__ import annotations

import asyncio

import pytest

from core.resources.vms import VmCreate
from federation.attempts import place_with_failover
from federation.errors import (
    AllAttemptsFailed,
    PlacementError,
    SiteFailed,
    SiteRefused,
    to_stratus_error,
)
from federation.model import HostCapacity, PlacementRequest, SiteCapacity
from federation.placement import Placer
from federation.providers.base import ProviderVM, VMCreateRequest
from federation.providers.fake import FakeProvider


def decision_for(*names: str) -> tuple[Placer, PlacementRequest]:
    placer = Placer(max_candidates=len(names) or 1)
    for i, name in enumerate(names):
        # decreasing capacity so the ranking follows the order given
        placer.update(
            SiteCapacity(name, hosts=[HostCapacity(64 - i, 65536)], fetchable_images=None)
        )
    return placer, PlacementRequest(vcpus=1, memory_mib=512, image="debian-12")


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, site: str, message: str) -> None:
        self.lines.append((site, message))

    @property
    def messages(self) -> list[str]:
        return [m for _, m in self.lines]


async def test_refusal_and_failure_move_on_and_everything_is_recorded() -> None:
    placer, request = decision_for("a", "b", "c", "d")
    decision = placer.place(request)

    async def try_site(candidate: object) -> str:
        site = candidate.site  # type: ignore[attr-defined]
        if site == "a":
            raise SiteRefused("a", "no free address")
        if site == "b":
            raise SiteFailed("b", "timeout")
        return f"vm@{site}"

    log = Log()
    assert await place_with_failover(decision, try_site, log) == "vm@c"
    outcomes = [m for m in log.messages if not m.startswith("trying")]
    assert outcomes == [
        "site a refused: no free address",
        "site b failed: timeout",
        "placed on site c",
    ]
    assert [s for s, m in log.lines if m.startswith("trying")] == ["a", "b", "c"]
    assert log.messages[0].startswith("trying site a (rank 1 score ")


async def test_all_candidates_failing_raises_with_every_reason() -> None:
    placer, request = decision_for("a", "b")

    async def try_site(candidate: object) -> None:
        site = candidate.site  # type: ignore[attr-defined]
        raise SiteRefused(site, f"quota at {site}")

    log = Log()
    with pytest.raises(AllAttemptsFailed) as info:
        await place_with_failover(placer.place(request), try_site, log)
    exc = info.value
    assert [(a.site, a.outcome, a.reason) for a in exc.attempts] == [
        ("a", "refused", "quota at a"),
        ("b", "refused", "quota at b"),
    ]
    assert exc.all_refused
    assert "a refused: quota at a; b refused: quota at b" in str(exc)
    assert to_stratus_error(exc).status == 409


async def test_a_failed_site_makes_the_final_error_a_503() -> None:
    placer, request = decision_for("a", "b")

    async def try_site(candidate: object) -> None:
        site = candidate.site  # type: ignore[attr-defined]
        if site == "a":
            raise SiteRefused("a", "full")
        raise SiteFailed("b", "HTTP 500 after 4 attempts")

    with pytest.raises(AllAttemptsFailed) as info:
        await place_with_failover(placer.place(request), try_site, Log())
    assert not info.value.all_refused
    err = to_stratus_error(info.value)
    assert (err.status, err.code) == (503, "sites_unavailable")
    assert err.details["attempts"][1] == {
        "site": "b",
        "outcome": "failed",
        "reason": "HTTP 500 after 4 attempts",
    }


async def test_slow_site_times_out_and_the_next_is_tried() -> None:
    placer, request = decision_for("slow", "fast")

    async def try_site(candidate: object) -> str:
        if candidate.site == "slow":  # type: ignore[attr-defined]
            await asyncio.sleep(10)
        return "ok"

    log = Log()
    assert (
        await place_with_failover(placer.place(request), try_site, log, attempt_timeout=0.05)
        == "ok"
    )
    assert "site slow failed: timeout after 0.05s" in log.messages


async def test_no_candidate_raises_placement_error() -> None:
    placer, request = decision_for()
    placer.update(SiteCapacity("tiny", hosts=[HostCapacity(0, 0)]))

    async def try_site(candidate: object) -> None:
        raise AssertionError("must not be called")

    with pytest.raises(PlacementError) as info:
        await place_with_failover(placer.decide(request), try_site, Log())
    assert set(info.value.rejected) == {"tiny"}


async def test_unexpected_errors_are_recorded_and_propagate() -> None:
    placer, request = decision_for("a", "b")

    async def try_site(candidate: object) -> None:
        raise KeyError("bug")

    log = Log()
    with pytest.raises(KeyError):
        await place_with_failover(placer.place(request), try_site, log)
    assert log.messages[-1] == "site a error: KeyError: 'bug'"
    assert len([m for m in log.messages if m.startswith("trying")]) == 1


async def test_failover_over_providers_creates_exactly_one_vm() -> None:
    """With real (fake) providers: a full site, a broken one, then a good one."""
    providers = {
        "full": FakeProvider("full", max_vms=0),
        "broken": FakeProvider("broken"),
        "good": FakeProvider("good"),
    }
    providers["broken"].fail_next(SiteFailed("broken", "connection refused after 4 attempts"))
    placer, request = decision_for("full", "broken", "good")

    async def try_site(candidate: object) -> ProviderVM:
        site = candidate.site  # type: ignore[attr-defined]
        return await providers[site].create_vm(
            VMCreateRequest(
                "vm-1", "key-1", VmCreate(image="debian-12", name="web", vcpus=1, memory_mib=512)
            )
        )

    log = Log()
    vm = await place_with_failover(placer.place(request), try_site, log)
    assert vm.site == "good"
    assert [len(await p.list_vms()) for p in providers.values()] == [0, 0, 1]
    assert [m for m in log.messages if not m.startswith("trying")] == [
        "site full refused: no host has room for the VM (no_capacity)",
        "site broken failed: connection refused after 4 attempts",
        "placed on site good",
    ]
