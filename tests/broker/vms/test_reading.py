"""A site that stops answering: partial listings, ``unknown`` VMs, nothing deleted.

A broker and two site agents on fake hosts, as processes on loopback; a
site is killed (``SIGKILL``) or frozen (``SIGSTOP``: no answers, no heartbeats).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from tests.broker.fedenv import Federation, SiteSpec, fake_hosts, tiny_image_toml, wait_for


def start(federation: Federation, tiny_image: Path) -> None:
    federation.start_broker(["site-a", "site-b"], heartbeat_timeout=2.0)
    federation.start_site(SiteSpec("site-a", fake_hosts(8), tiny_image_toml(tiny_image)))
    federation.start_site(SiteSpec("site-b", fake_hosts(8), tiny_image_toml(tiny_image), price=1))
    federation.wait_sites(["site-a", "site-b"])


def run_on(federation: Federation, site: str) -> dict[str, Any]:
    with federation.api() as api:
        response = api.post("/vms", json={"image": "tiny", "site": site})
        assert response.status_code == 202, response.text
        vm: dict[str, Any] = response.json()["vms"][0]
        running = api.get(f"/vms/{vm['id']}", params={"wait": "running", "timeout": 10}).json()
        assert running["state"] == "running"
        return running


def test_listing_is_partial_with_a_warning_while_a_site_does_not_answer(
    federation: Federation, tiny_image: Path
) -> None:
    start(federation, tiny_image)
    on_a, on_b = run_on(federation, "site-a"), run_on(federation, "site-b")
    federation.kill(federation.sites["site-a"])
    with federation.api() as api:
        listing = api.get("/vms")
        assert listing.status_code == 200
        body = listing.json()
        assert body["partial"] is True
        assert len(body["warnings"]) == 1 and "site site-a did not answer" in body["warnings"][0]
        vms = {v["id"]: v for v in body["vms"]}
        assert vms[on_b["id"]]["state"] == "running" and vms[on_b["id"]]["site"] == "site-b"
        assert vms[on_a["id"]]["state"] == "unknown"
        assert "site site-a did not answer" in vms[on_a["id"]]["state_reason"]
        assert vms[on_a["id"]]["site_vm_id"] == on_a["site_vm_id"], "last known fields kept"

        # Once its heartbeats time out the site is not even asked; the reason says so.
        federation.wait_sites(["site-a"], status="unavailable")
        body = api.get("/vms").json()
        assert body["partial"] and "missed its heartbeats" in body["warnings"][0]
        vms = {v["id"]: v for v in body["vms"]}
        assert vms[on_a["id"]]["state"] == "unknown"
        assert "missed its heartbeats" in vms[on_a["id"]]["state_reason"]
        # The images listing is partial too, and new VMs go to the site that is up.
        images = api.get("/images").json()
        assert images["partial"] and [i["sites"] for i in images["images"]] == [["site-b"]]
        assert api.post("/vms", json={"image": "tiny"}).json()["vms"][0]["site"] == "site-b"


def test_a_site_that_misses_heartbeats_shows_its_vms_unknown_and_nothing_is_deleted(
    federation: Federation, tiny_image: Path
) -> None:
    start(federation, tiny_image)
    vm = run_on(federation, "site-a")
    site_a = federation.sites["site-a"]
    os.kill(site_a.popen.pid, signal.SIGSTOP)  # no answers, no heartbeats
    try:
        federation.wait_sites(["site-a"], status="unavailable")
        with federation.api() as api:
            site = api.get("/sites/site-a").json()
            assert site["status"] == "unavailable" and "missed its heartbeats" in site["reason"]
            shown = api.get(f"/vms/{vm['id']}").json()
            assert shown["state"] == "unknown" and "missed its heartbeats" in shown["state_reason"]
            # Operations needing the site are refused, and change nothing.
            killed = api.delete(f"/vms/{vm['id']}")
            assert killed.status_code == 503
            assert killed.json()["error"]["code"] == "site_unreachable"
            assert api.post(f"/vms/{vm['id']}/reboot").status_code == 503

            def outage_logged() -> bool:
                log = api.get(f"/vms/{vm['id']}/events").json()["events"]
                return any("nothing deleted" in e["reason"] for e in log)

            wait_for(outage_logged, timeout=5, what="the outage in the VM's events")
            warnings = api.get(f"/vms/{vm['id']}/events").json()["warnings"]
            assert warnings and "site events not included" in warnings[0]
    finally:
        os.kill(site_a.popen.pid, signal.SIGCONT)
    # Heartbeats resume: the site is back, the VM with it, untouched.
    federation.wait_sites(["site-a"], status="available")
    with federation.api() as api:
        back = api.get(f"/vms/{vm['id']}").json()
        assert back["state"] == "running" and back["site_vm_id"] == vm["site_vm_id"]
        reasons = [e["reason"] for e in api.get(f"/vms/{vm['id']}/events").json()["events"]]
        assert any("site site-a is back" in r for r in reasons)
    at_site = [v for v in federation.site_vms("site-a") if v["id"] == vm["site_vm_id"]]
    assert at_site and at_site[0]["state"] == "running"


def test_a_restarted_site_keeps_its_vms_and_the_broker_finds_them(
    federation: Federation, tiny_image: Path
) -> None:
    start(federation, tiny_image)
    vm = run_on(federation, "site-a")
    federation.stop(federation.sites["site-a"])
    federation.wait_sites(["site-a"], status="unavailable")
    federation.start_site(federation.specs["site-a"])  # same state directory and port
    federation.wait_sites(["site-a"], status="available")
    with federation.api() as api:
        shown = wait_for(
            lambda: (v := api.get(f"/vms/{vm['id']}").json())["state"] != "unknown" and v,
            what="the VM to be known again",
        )
        assert shown["site"] == "site-a" and shown["site_vm_id"] == vm["site_vm_id"]
