"""The deferred queue: waiting requests start when capacity frees, by priority then FIFO,
expire after their deadline, and survive a broker restart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.broker.fedenv import Federation, SiteSpec, fake_hosts, tiny_image_toml, wait_for


def one_slot_site(federation: Federation, tiny_image: Path) -> None:
    """One site with room for exactly one m1.small VM (1 vCPU)."""
    federation.start_broker(["site-a"])
    federation.start_site(SiteSpec("site-a", fake_hosts(1), tiny_image_toml(tiny_image)))
    federation.wait_sites(["site-a"])


def post(api: httpx.Client, **body: Any) -> httpx.Response:
    body.setdefault("image", "tiny")
    return api.post("/vms", json=body)


def created(api: httpx.Client, **body: Any) -> dict[str, Any]:
    response = post(api, **body)
    assert response.status_code == 202, response.text
    vm: dict[str, Any] = response.json()["vms"][0]
    return vm


def state_of(api: httpx.Client, vm_id: str) -> dict[str, Any]:
    vm: dict[str, Any] = api.get(f"/vms/{vm_id}").json()
    return vm


def test_a_queued_request_starts_when_a_vm_is_killed(
    federation: Federation, tiny_image: Path
) -> None:
    one_slot_site(federation, tiny_image)
    with federation.api() as api:
        first = created(api, name="first")
        assert first["site"] == "site-a"
        refused = post(api)  # no room, no cloud, no queue: 409 with the reasons
        assert refused.status_code == 409
        assert "no host with 1 free CPUs" in refused.json()["error"]["details"]["sites"]["site-a"]
        waiting = created(api, name="waiting", queue=True)
        assert waiting["state"] == "queued" and waiting["site"] is None
        assert waiting["queue_position"] == 1 and waiting["deadline"] is not None
        listed = {v["name"]: v for v in api.get("/vms").json()["vms"]}
        assert listed["waiting"]["state"] == "queued"

        assert api.delete(f"/vms/{first['id']}").json()["state"] == "done"
        started = wait_for(
            lambda: (v := state_of(api, waiting["id"]))["state"] not in ("queued", "pending") and v,
            what="the queued VM to start",
        )
        assert started["site"] == "site-a" and started["state"] in ("prolog", "boot", "running")
        reasons = [e["reason"] for e in api.get(f"/vms/{waiting['id']}/events").json()["events"]]
        assert any(r.startswith("queued until capacity frees") for r in reasons)
        assert any("capacity freed" in r for r in reasons)
        assert "placed on site site-a" in reasons


def test_priority_then_fifo_expiry_cancel_and_a_broker_restart(
    federation: Federation, tiny_image: Path
) -> None:
    one_slot_site(federation, tiny_image)
    with federation.api() as api:
        first = created(api, name="first")
        low = created(api, name="low", queue=True)
        high = created(api, name="high", queue=True, priority=5)
        short = created(api, name="short", queue=True, deadline_seconds=1)
        gone = created(api, name="gone", queue=True)
        assert state_of(api, high["id"])["queue_position"] == 1
        assert state_of(api, low["id"])["queue_position"] == 2
        too_high = post(api, queue=True, priority=99)
        assert too_high.status_code == 422

        # A queued request can be killed: it leaves the queue, nothing ever ran.
        assert api.delete(f"/vms/{gone['id']}").json()["state"] == "done"

        expired = wait_for(
            lambda: (v := state_of(api, short["id"]))["state"] == "expired" and v,
            what="the short request to expire",
        )
        assert "passed before capacity freed" in expired["state_reason"]

    # The queue is in the database: a restarted broker keeps it, in order.
    federation.restart_broker()
    federation.wait_sites(["site-a"])
    with federation.api() as api:
        assert state_of(api, high["id"])["queue_position"] == 1
        assert state_of(api, low["id"])["queue_position"] == 2
        api.delete(f"/vms/{first['id']}")
        wait_for(
            lambda: state_of(api, high["id"])["state"] not in ("queued", "pending"),
            what="the high-priority request to start first",
        )
        time.sleep(1.0)  # a few heartbeats: nothing else may start (no room left)
        assert state_of(api, low["id"])["state"] == "queued"
        assert state_of(api, low["id"])["queue_position"] == 1
        assert state_of(api, gone["id"])["state"] == "done"


def test_a_queued_request_is_made_as_its_user_even_after_a_broker_restart(
    federation: Federation, tiny_image: Path
) -> None:
    one_slot_site(federation, tiny_image)
    with federation.api("bob") as bob:
        first = created(bob, name="first")
    with federation.api() as api:
        waiting = created(api, name="waiting", queue=True)
        assert waiting["state"] == "queued"
    # The queued request, and the user it is for, come back from the database.
    federation.restart_broker()
    federation.wait_sites(["site-a"])
    with federation.api("bob") as bob:
        assert bob.delete(f"/vms/{first['id']}").json()["state"] == "done"
    with federation.api() as api:
        started = wait_for(
            lambda: (v := state_of(api, waiting["id"]))["site_vm_id"] is not None and v,
            what="the queued VM to start",
        )
    [there] = [v for v in federation.site_vms("site-a") if v["id"] == started["site_vm_id"]]
    assert (there["owner"], there["via"]) == ("alice", "test-broker"), "made as alice, not bob"
    [bobs] = [v for v in federation.site_vms("site-a") if v["id"] == first["site_vm_id"]]
    assert bobs["owner"] == "bob"
