"""core.site_report: the heartbeat model both sides share."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.site_report import SiteReport


def report(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "site": "lal",
        "public_url": "https://lal.example:8440/",
        "hosts": [{"name": "qemu:///system", "free_cpus": 4, "free_memory_mib": 4096}],
        "networks": [{"name": "pub", "type": "public", "cidr": "198.18.0.0/24", "free": 10}],
    }
    base.update(changes)
    return base


def test_a_report_round_trips_and_strips_the_url() -> None:
    parsed = SiteReport.model_validate(report())
    assert parsed.public_url == "https://lal.example:8440"
    assert parsed.networks[0].type == "public"
    assert SiteReport.model_validate(parsed.model_dump(mode="json")) == parsed
    assert not parsed.simulated


def test_simulated_only_when_every_host_is() -> None:
    fake = {"name": "fake://a", "free_cpus": 1, "free_memory_mib": 1, "simulated": True}
    real = {"name": "qemu:///system", "free_cpus": 1, "free_memory_mib": 1}
    assert SiteReport.model_validate(report(hosts=[fake])).simulated
    assert not SiteReport.model_validate(report(hosts=[fake, real])).simulated
    assert not SiteReport.model_validate(report(hosts=[])).simulated


@pytest.mark.parametrize(
    "changes",
    [
        {"public_url": "ftp://x.example"},
        {"site": "Bad Name"},
        {"hosts": [{"free_cpus": -1, "free_memory_mib": 1}]},
        {"networks": [{"name": "pub", "type": "galactic", "cidr": "x", "free": 1}]},
        {"unknown_field": 1},
    ],
)
def test_bad_reports_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SiteReport.model_validate(report(**changes))
