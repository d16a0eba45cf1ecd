"""Placement through the broker: rank, named sites, constraints, refusals, failover.

A broker and two site agents on fake hosts, as processes on loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.broker.fedenv import (
    Federation,
    FlakyProxy,
    SiteSpec,
    fake_hosts,
    free_port,
    tiny_image_toml,
    wait_for,
)


def two_sites(federation: Federation, tiny_image: Path, **site_a: Any) -> None:
    """site-a: cheap (price 0), in FR; site-b: dearer (0.2), in DE; both 8 vCPUs."""
    federation.start_broker(["site-a", "site-b"])
    spec_a = SiteSpec("site-a", fake_hosts(8), tiny_image_toml(tiny_image), price=0.0)
    spec_a.location = {"country": "FR"}
    for key, value in site_a.items():
        setattr(spec_a, key, value)
    federation.start_site(spec_a)
    federation.start_site(
        SiteSpec(
            "site-b",
            fake_hosts(8),
            tiny_image_toml(tiny_image),
            price=0.2,
            location={"country": "DE"},
        )
    )
    federation.wait_sites(["site-a", "site-b"])


@pytest.fixture
def fed(federation: Federation, tiny_image: Path) -> Iterator[Federation]:
    two_sites(federation, tiny_image)
    yield federation


def create(api: httpx.Client, **body: Any) -> dict[str, Any]:
    body.setdefault("image", "tiny")
    response = api.post("/vms", json=body)
    assert response.status_code == 202, response.text
    vm: dict[str, Any] = response.json()["vms"][0]
    return vm


def events(api: httpx.Client, vm_id: str) -> list[dict[str, Any]]:
    response = api.get(f"/vms/{vm_id}/events")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["events"]
    return found


def test_the_best_ranked_site_gets_the_vm_and_the_choice_is_explained(fed: Federation) -> None:
    with fed.api() as api:
        vm = create(api)
        assert vm["site"] == "site-a" and vm["kind"] == "site"
        assert vm["owner"] == "alice" and vm["state"] in ("pending", "prolog", "boot", "running")
        log = events(api, vm["id"])
        broker_lines = [e["reason"] for e in log if e["source"] == "broker"]
        assert broker_lines[1].startswith("trying site site-a (rank 1 score")
        assert "price=1.000" in broker_lines[1]  # site-a costs nothing: the full price term
        assert "placed on site site-a" in broker_lines
        assert any(e["source"] == "site-a" for e in log), "site events are merged in"
        # The VM really is at site-a, owned there by alice, made through the broker.
        at_site = [v for v in fed.site_vms("site-a") if v["id"] == vm["site_vm_id"]]
        assert at_site and (at_site[0]["owner"], at_site[0]["via"]) == ("alice", "test-broker")
        assert fed.site_vms("site-b") == []


def test_named_site_constraints_and_preferences_choose_the_site(fed: Federation) -> None:
    with fed.api() as api:
        assert create(api, site="site-b")["site"] == "site-b"
        assert create(api, constraints=["site in [site-b]"])["site"] == "site-b"
        assert create(api, constraints=["country == DE"])["site"] == "site-b"
        assert create(api, preferred_sites=["site-b"])["site"] == "site-b"
        assert create(api, constraints=["site in [site-a, site-b]"])["site"] == "site-a"
        listing = api.get("/vms").json()
        assert not listing["partial"] and len(listing["vms"]) == 5
        assert {v["site"] for v in listing["vms"]} == {"site-a", "site-b"}


def test_unknown_site_is_404_and_a_constraint_no_site_meets_is_409_with_reasons(
    fed: Federation,
) -> None:
    with fed.api() as api:
        r = api.post("/vms", json={"image": "tiny", "site": "nowhere"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_site"
        assert r.json()["error"]["details"]["known"] == ["site-a", "site-b"]
        r = api.post("/vms", json={"image": "tiny", "constraints": ["site in [site-a, mars]"]})
        assert r.status_code == 404 and "mars" in r.json()["error"]["message"]

        r = api.post("/vms", json={"image": "tiny", "constraints": ["country == JP"]})
        assert r.status_code == 409, r.text
        error = r.json()["error"]
        assert error["code"] == "placement_failed"
        assert set(error["details"]["sites"]) == {"site-a", "site-b"}
        assert "country=FR" in error["details"]["sites"]["site-a"]
        assert "may burst" in error["details"]["burst"]["reason"]  # alice may not burst here

        r = api.post("/vms", json={"image": "tiny", "vcpus": 16, "memory_mib": 1024})
        assert r.status_code == 409
        assert all(
            "no host with 16 free CPUs" in why
            for why in r.json()["error"]["details"]["sites"].values()
        )

        r = api.post("/vms", json={"image": "debian-13"})
        assert r.status_code == 409 and "neither cached nor fetchable" in r.text

        r = api.post("/vms", json={"image": "tiny", "constraints": ["site in [a b]"]})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_constraint"
        r = api.post(
            "/vms", json={"image": "tiny", "site": "site-a", "constraints": ["site == site-b"]}
        )
        assert r.status_code == 400
        r = api.post("/vms", json={"image": "tiny", "bogus": 1})
        assert r.status_code == 422
        # Nothing was left behind by the refused requests.
        assert api.get("/vms").json()["vms"] == []
    assert fed.site_vms("site-a") == [] and fed.site_vms("site-b") == []


def test_failover_when_the_best_site_died(fed: Federation) -> None:
    fed.kill(fed.sites["site-a"])  # still 'available' until its heartbeats time out
    with fed.api() as api:
        vm = create(api)
        assert vm["site"] == "site-b"
        lines = [e["reason"] for e in events(api, vm["id"]) if e["source"] == "broker"]
        tried_a = next(i for i, line in enumerate(lines) if line.startswith("trying site site-a"))
        assert lines[tried_a + 1].startswith("site site-a failed: POST /api/v1/vms: unreachable")
        assert lines[tried_a + 2].startswith("trying site site-b (rank 2")
        assert lines[tried_a + 3] == "placed on site site-b"
    assert [v["id"] for v in fed.site_vms("site-b")] == [vm["site_vm_id"]]


def test_a_site_dying_in_the_middle_of_a_create_leaves_no_vm_no_one_knows(
    federation: Federation, tiny_image: Path
) -> None:
    """site-a makes the VM, then 'dies' before answering: the broker places the VM on
    site-b; when site-a answers again, the orphan sweep kills the VM it made."""
    federation.start_broker(["site-a", "site-b"])
    spec_a = SiteSpec("site-a", fake_hosts(8), tiny_image_toml(tiny_image), port=free_port())
    proxy = FlakyProxy(f"http://127.0.0.1:{spec_a.port}", lambda method, path, n: "pass")
    try:
        spec_a.public_url = proxy.url
        federation.start_site(spec_a)
        spec_b = SiteSpec("site-b", fake_hosts(8), tiny_image_toml(tiny_image), price=0.5)
        federation.start_site(spec_b)
        federation.wait_sites(["site-a", "site-b"])

        def plan_dying(method: str, path: str, n: int) -> str:
            if method == "POST" and path == "/api/v1/vms":
                return "forward-then-drop" if n == 1 else "drop"
            return "pass"

        proxy.plan = plan_dying
        with federation.api() as api:
            vm = create(api)
            assert vm["site"] == "site-b"
            lines = [e["reason"] for e in events(api, vm["id"]) if e["source"] == "broker"]
            assert any(line.startswith("site site-a failed:") for line in lines)
        made_at_a = federation.site_vms("site-a")
        assert len(made_at_a) == 1, "site-a made the VM whose answer was lost"
        # The orphan sweep (grace 2 s in tests) kills it: nothing runs that no one knows.
        wait_for(
            lambda: all(v["state"] == "done" for v in federation.site_vms("site-a")),
            timeout=30,
            what="the orphan at site-a to be killed",
        )
        assert [v["state"] for v in federation.site_vms("site-b")] != ["done"]
        assert federation.broker is not None
        assert "orphan sweep: killing VM" in federation.broker.log
    finally:
        proxy.close()
