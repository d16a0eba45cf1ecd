"""Volumes through the broker: placed at a site, forwarded, aggregated, isolated per user.

A broker and two site agents on fake hosts (site-a cheaper than site-b), as
processes on loopback.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.broker.fedenv import (
    SITE_ADMIN_TOKEN,
    Federation,
    SiteSpec,
    fake_hosts,
    tiny_image_toml,
    wait_for,
)


@pytest.fixture
def fed(federation: Federation, tiny_image: Path) -> Iterator[Federation]:
    federation.start_broker(["site-a", "site-b"])
    federation.start_site(SiteSpec("site-a", fake_hosts(4), tiny_image_toml(tiny_image)))
    federation.start_site(SiteSpec("site-b", fake_hosts(4), tiny_image_toml(tiny_image), price=0.2))
    federation.wait_sites(["site-a", "site-b"])
    yield federation


def new_volume(api: httpx.Client, **body: Any) -> dict[str, Any]:
    body.setdefault("size_gib", 1)
    response = api.post("/volumes", json=body)
    assert response.status_code == 202, response.text
    volume: dict[str, Any] = response.json()
    return volume


def running_vm(api: httpx.Client, site: str) -> dict[str, Any]:
    response = api.post("/vms", json={"image": "tiny", "site": site})
    assert response.status_code == 202, response.text
    vm_id = response.json()["vms"][0]["id"]
    vm: dict[str, Any] = api.get(f"/vms/{vm_id}", params={"wait": "running"}).json()
    assert vm["state"] == "running", vm
    return vm


def site_volumes(fed: Federation, site: str) -> list[dict[str, Any]]:
    """Every volume at the site (all owners), as the site itself lists them."""
    with fed.site_api(site, SITE_ADMIN_TOKEN) as api:
        response = api.get("/volumes", params={"all": "true"})
        response.raise_for_status()
        volumes: list[dict[str, Any]] = response.json()["volumes"]
        return volumes


def test_create_at_a_site_list_with_the_site_update_and_delete_forwarded(fed: Federation) -> None:
    with fed.api() as api:
        on_b = new_volume(api, site="site-b", tag="data")
        assert (on_b["site"], on_b["owner"], on_b["state"], on_b["tag"]) == (
            "site-b",
            "alice",
            "ready",
            "data",
        )
        at_b = site_volumes(fed, "site-b")
        assert [(v["id"], v["owner"], v["via"]) for v in at_b] == [
            (on_b["site_volume_id"], "alice", "test-broker")
        ]
        placed = new_volume(api, size_gib=2)  # no site: the cheapest available one
        assert placed["site"] == "site-a" and placed["size_gib"] == 2

        listing = api.get("/volumes").json()
        assert not listing["partial"] and listing["warnings"] == []
        assert {(v["id"], v["site"]) for v in listing["volumes"]} == {
            (on_b["id"], "site-b"),
            (placed["id"], "site-a"),
        }
        assert [v["id"] for v in api.get("/volumes", params={"tag": "^da"}).json()["volumes"]] == [
            on_b["id"]
        ]

        changed = api.patch(f"/volumes/{on_b['id']}", json={"tag": "renamed"})
        assert changed.status_code == 200 and changed.json()["tag"] == "renamed"
        assert site_volumes(fed, "site-b")[0]["tag"] == "renamed"
        assert api.get(f"/volumes/{on_b['id']}").json()["tag"] == "renamed"

        deleted = api.delete(f"/volumes/{on_b['id']}")
        assert deleted.json() == {"id": on_b["id"], "deleted": True, "site": "site-b"}
        assert site_volumes(fed, "site-b") == []
        assert api.get(f"/volumes/{on_b['id']}").status_code == 404
        assert [v["id"] for v in api.get("/volumes").json()["volumes"]] == [placed["id"]]

        unknown = api.post("/volumes", json={"size_gib": 1, "site": "nowhere"})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_site"


def test_attach_and_detach_are_forwarded_and_refused_across_sites(fed: Federation) -> None:
    with fed.api() as api:
        vm = running_vm(api, "site-a")
        volume = new_volume(api, site="site-a")
        disk = api.post(f"/volumes/{volume['id']}/attach", json={"vm_id": vm["id"]})
        assert disk.status_code == 200, disk.text
        assert disk.json() == {
            "vm_id": vm["id"],
            "device": "vdc",
            "kind": "volume",
            "volume_id": volume["id"],
            "image": None,
            "readonly": False,
            "site": "site-a",
        }
        shown = api.get(f"/volumes/{volume['id']}").json()
        assert shown["attached"] == 1
        assert shown["attachments"] == [{"vm_id": vm["id"], "device": "vdc", "readonly": False}]
        with fed.site_api("site-a") as site:
            at_site = site.get(f"/volumes/{volume['site_volume_id']}").json()
        assert at_site["attachments"][0]["vm_id"] == vm["site_vm_id"]  # translated at the broker

        detached = api.post(f"/volumes/{volume['id']}/detach", json={"vm_id": vm["id"]})
        assert detached.status_code == 200 and detached.json()["device"] == "vdc"
        assert api.get(f"/volumes/{volume['id']}").json()["attached"] == 0

        elsewhere = new_volume(api, site="site-b")
        refused = api.post(f"/volumes/{elsewhere['id']}/attach", json={"vm_id": vm["id"]})
        assert refused.status_code == 409
        error = refused.json()["error"]
        assert error["code"] == "invalid_operation"
        assert "on site site-b" in error["message"] and "on site-a" in error["message"]
        assert site_volumes(fed, "site-b")[0]["attached"] == 0


def test_another_users_volume_is_404_and_admins_see_all(fed: Federation) -> None:
    with fed.api() as alice:
        volume = new_volume(alice, site="site-a", visibility="public")
        vm = running_vm(alice, "site-a")
    path = f"/volumes/{volume['id']}"
    with fed.api("bob") as bob:
        assert bob.get("/volumes").json()["volumes"] == []
        assert bob.get(path).status_code == 404
        assert bob.patch(path, json={"tag": "mine"}).status_code == 404
        assert bob.delete(path).status_code == 404
        assert bob.post(path + "/attach", json={"vm_id": vm["id"]}).status_code == 404
        own = new_volume(bob, site="site-a")
        stolen_vm = bob.post(f"/volumes/{own['id']}/attach", json={"vm_id": vm["id"]})
        assert stolen_vm.status_code == 404  # alice's VM is not bob's either
    with fed.api("root") as root:
        every = root.get("/volumes", params={"all": "true"}).json()["volumes"]
        assert {(v["id"], v["owner"]) for v in every} == {
            (volume["id"], "alice"),
            (own["id"], "bob"),
        }
    with fed.api() as alice:
        assert alice.get(path).json()["tag"] == ""  # bob changed nothing


def test_an_idempotent_create_makes_one_volume(fed: Federation) -> None:
    headers = {"Idempotency-Key": "vol-key-1"}
    body = {"size_gib": 1, "site": "site-a", "tag": "once"}
    with fed.api() as api:
        first = api.post("/volumes", json=body, headers=headers)
        again = api.post("/volumes", json=body, headers=headers)
        assert first.status_code == again.status_code == 202
        assert first.json()["id"] == again.json()["id"]
        reused = api.post("/volumes", json={**body, "size_gib": 2}, headers=headers)
        assert reused.status_code == 409
        assert reused.json()["error"]["code"] == "idempotency_key_reused"

        concurrent = {**body, "tag": "racing"}

        def post(_: int) -> str:
            response = api.post("/volumes", json=concurrent, headers={"Idempotency-Key": "k2"})
            assert response.status_code == 202, response.text
            volume_id: str = response.json()["id"]
            return volume_id

        with ThreadPoolExecutor(4) as pool:
            ids = set(pool.map(post, range(4)))
        assert len(ids) == 1
        assert len(api.get("/volumes").json()["volumes"]) == 2
    assert sorted(v["tag"] for v in site_volumes(fed, "site-a")) == ["once", "racing"]


def test_listing_is_partial_with_a_warning_while_a_site_is_down(fed: Federation) -> None:
    with fed.api() as api:
        on_a = new_volume(api, site="site-a")
        on_b = new_volume(api, site="site-b", tag="far")
    site_b = fed.sites["site-b"]
    os.kill(site_b.popen.pid, signal.SIGSTOP)  # no answers, no heartbeats
    try:
        with fed.api() as api:
            listing = api.get("/volumes")
            assert listing.status_code == 200
            body = listing.json()
            assert body["partial"] is True
            assert len(body["warnings"]) == 1 and "site-b" in body["warnings"][0]
            by_id = {v["id"]: v for v in body["volumes"]}
            assert by_id[on_a["id"]]["state"] == "ready"
            assert by_id[on_b["id"]]["state"] == "unknown"
            assert by_id[on_b["id"]]["tag"] == "far" and by_id[on_b["id"]]["site"] == "site-b"
            assert "site-b" in by_id[on_b["id"]]["state_reason"]
            down = api.delete(f"/volumes/{on_b['id']}")
            assert down.status_code == 503 and down.json()["error"]["code"] == "site_unreachable"
    finally:
        os.kill(site_b.popen.pid, signal.SIGCONT)
    with fed.api() as api:
        back = wait_for(lambda: not api.get("/volumes").json()["partial"], what="site-b back")
        assert back
        assert api.get(f"/volumes/{on_b['id']}").json()["state"] == "ready"
