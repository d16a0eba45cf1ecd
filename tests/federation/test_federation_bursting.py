"""BurstPolicy: when a request may go to a public cloud, to which, and why not."""

from __future__ import annotations

from typing import Any

import pytest

from federation.bursting import BurstAction, BurstBudget, BurstPolicy
from federation.model import CloudSize, PlacementRequest, PublicCloudConfig

CHEAP = PublicCloudConfig(
    "cheap-cloud",
    images={"debian-12": "ami-1"},
    sizes={
        "m1.small": CloudSize("t3.micro", 1, 1024, 0.01),
        "m1.large": CloudSize("t3.large", 2, 8192, 0.08),
    },
)
DEAR = PublicCloudConfig(
    "dear-cloud",
    images={"debian-12": "ami-2", "alma-9": "ami-3"},
    sizes={"m1.small": CloudSize("n1-small", 1, 2048, 0.05)},
)


def policy(**kw: Any) -> BurstPolicy:
    args: dict[str, Any] = {
        "clouds": (DEAR, CHEAP),
        "allowed_users": {"alice"},
        "allowed_vos": {"biomed"},
        "budget_per_period": 10.0,
    }
    args.update(kw)
    return BurstPolicy(**args)


def req(**kw: Any) -> PlacementRequest:
    args: dict[str, Any] = {
        "vcpus": 1,
        "memory_mib": 512,
        "image": "debian-12",
        "user": "alice",
        "instance_type": "m1.small",
    }
    args.update(kw)
    return PlacementRequest(**args)


def test_bursts_to_the_cheapest_cloud_that_serves_the_request() -> None:
    d = policy().decide(req(expected_hours=10), placement_found=False, spent=2.0)
    assert d.action is BurstAction.BURST
    assert (d.cloud, d.instance_type) == ("cheap-cloud", "m1.small")
    assert d.size is not None and d.size.size_id == "t3.micro"
    assert d.estimated_cost == pytest.approx(0.1)
    assert "bursting to cheap-cloud as t3.micro" in d.reason
    assert "7.90 of the budget left" in d.reason


def test_image_mapped_on_one_cloud_only() -> None:
    d = policy().decide(req(image="alma-9"), placement_found=False)
    assert (d.action, d.cloud) == (BurstAction.BURST, "dear-cloud")


def test_size_chosen_by_cpu_and_ram_without_instance_type() -> None:
    d = policy().decide(req(instance_type=None, vcpus=2, memory_mib=4096), placement_found=False)
    assert (d.cloud, d.instance_type) == ("cheap-cloud", "m1.large")


@pytest.mark.parametrize(
    ("request_kw", "policy_kw", "reason"),
    [
        ({"confidential": True}, {}, "confidential requests never leave the federation"),
        ({"sites": ("lal", "grif")}, {}, "pinned to sites [lal, grif]; never burst"),
        ({"allow_burst": False}, {}, "the user opted out of bursting"),
        (
            {"network": "lan", "host_tags": {"ssd"}, "static_images": {"data"}},
            {},
            "needs site resources a public cloud does not have "
            "(pool lan; host tags ssd; static disks data)",
        ),
        ({"address": "198.51.100.4"}, {}, "(address 198.51.100.4)"),
        ({"user": "bob", "vo": "atlas"}, {}, "neither user bob nor their VOs (atlas) may burst"),
        ({"user": None}, {}, "neither user (anonymous) nor their VOs (none) may burst"),
        ({}, {"clouds": ()}, "no public cloud is configured"),
        (
            {"image": "gentoo"},
            {},
            "no public cloud can serve the request: dear-cloud: image gentoo not mapped; "
            "cheap-cloud: image gentoo not mapped",
        ),
        (
            {"instance_type": "x1.huge"},
            {},
            "dear-cloud: no size for x1.huge; cheap-cloud: no size for x1.huge",
        ),
        (
            {"expected_hours": 100},
            {"budget_per_period": 0.5},
            "burst budget exhausted: 0.00 of 0.50 spent this period, the request needs 1.00",
        ),
    ],
)
def test_denials_give_their_reason(
    request_kw: dict[str, Any], policy_kw: dict[str, Any], reason: str
) -> None:
    d = policy(**policy_kw).decide(req(**request_kw), placement_found=False)
    assert d.action is BurstAction.REJECT
    assert reason in d.reason
    assert d.cloud is None


def test_a_pool_type_alone_may_burst() -> None:
    """A cloud gives addresses of its own: asking for a public address does not pin to sites."""
    d = policy().decide(req(network_type="public"), placement_found=False)
    assert d.action is BurstAction.BURST


def test_never_bursts_when_a_site_can_place() -> None:
    d = policy(allow_everyone=True).decide(req(), placement_found=True)
    assert d.action is BurstAction.REJECT
    assert "only for when no site can" in d.reason


def test_request_asking_to_wait_is_queued_even_if_it_could_burst() -> None:
    d = policy().decide(req(wait=True), placement_found=False)
    assert (d.action, d.reason) == (BurstAction.QUEUE, "the request asked to wait for capacity")


def test_policy_can_send_denied_requests_to_the_queue() -> None:
    p = policy(when_denied="queue")
    d = p.decide(req(confidential=True), placement_found=False)
    assert d.action is BurstAction.QUEUE
    assert "confidential" in d.reason


def test_vo_or_group_membership_allows_bursting() -> None:
    p = policy()
    assert p.decide(req(user="bob", vo="biomed"), placement_found=False).action is BurstAction.BURST
    assert (
        p.decide(req(user="bob", groups={"biomed"}), placement_found=False).action
        is BurstAction.BURST
    )
    assert (
        policy(allow_everyone=True).decide(req(user="bob"), placement_found=False).action
        is BurstAction.BURST
    )


def test_budget_boundary_is_inclusive() -> None:
    p = policy(budget_per_period=1.0)
    assert p.decide(req(expected_hours=100), placement_found=False, spent=0.0).action is (
        BurstAction.BURST
    )
    assert p.decide(req(expected_hours=100), placement_found=False, spent=0.01).action is (
        BurstAction.REJECT
    )


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="when_denied"):
        BurstPolicy(when_denied=BurstAction.BURST)
    with pytest.raises(ValueError, match="unique"):
        BurstPolicy(clouds=(CHEAP, CHEAP))
    with pytest.raises(ValueError, match="budget"):
        BurstPolicy(budget_per_period=-1)


def test_cloud_secret_not_in_repr() -> None:
    cloud = PublicCloudConfig("c", key="AKID", secret="s3cr3t-value")
    assert "s3cr3t-value" not in repr(cloud)


def test_budget_ledger_uses_a_rolling_window() -> None:
    budget = BurstBudget(period_seconds=100)
    budget.charge(3.0, at=10)
    budget.charge(2.0, at=60)
    assert budget.spent(now=100) == pytest.approx(5.0)
    assert budget.spent(now=150) == pytest.approx(2.0)  # the first charge left the window
    budget.prune(now=150)
    assert budget.charges == [(60, 2.0)]
    assert BurstBudget.load(100, [(1.0, 1.5)]).spent(50) == pytest.approx(1.5)
    with pytest.raises(ValueError):
        budget.charge(-1, at=1)


def test_offers_list_every_affordable_cloud_cheapest_first() -> None:
    d = policy().decide(req(expected_hours=100), placement_found=False, spent=8.0)
    # cheap-cloud costs 1.00, dear-cloud 5.00: only the first fits in the 2.00 left
    assert [o.cloud for o in d.offers] == ["cheap-cloud"]
    d = policy().decide(req(expected_hours=10), placement_found=False)
    assert [(o.cloud, round(o.estimated_cost, 2)) for o in d.offers] == [
        ("cheap-cloud", 0.1),
        ("dear-cloud", 0.5),
    ]
    placement = d.as_placement(req())
    assert [(c.site, c.rank) for c in placement.candidates] == [
        ("cheap-cloud", 1),
        ("dear-cloud", 2),
    ]
    assert placement.candidates[0].components == {"estimated_cost": pytest.approx(0.1)}
    denied = policy().decide(req(confidential=True), placement_found=False)
    assert denied.offers == () and denied.as_placement(req()).candidates == ()
