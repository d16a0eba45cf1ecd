"""Images through the broker: every site's images with their sites, registration at one or
every site, show and delete, and a saved image that belongs to its real user.

A broker and two site agents on fake hosts; registered images are downloaded from a
small HTTP server on 127.0.0.1 run by the test.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
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


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A qcow2 file served over HTTP on 127.0.0.1; yields the registration body's fields."""
    root = tmp_path / "served"
    root.mkdir()
    disk = root / "deb.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    content = disk.read_bytes()
    yield {
        "url": f"http://127.0.0.1:{server.server_address[1]}/deb.qcow2",
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def fed(federation: Federation, tiny_image: Path) -> Iterator[Federation]:
    federation.start_broker(["site-a", "site-b"])
    federation.start_site(SiteSpec("site-a", fake_hosts(4), tiny_image_toml(tiny_image)))
    federation.start_site(SiteSpec("site-b", fake_hosts(4), tiny_image_toml(tiny_image), price=1))
    federation.wait_sites(["site-a", "site-b"])
    yield federation


def site_image(fed: Federation, site: str, name: str) -> httpx.Response:
    with fed.site_api(site, SITE_ADMIN_TOKEN) as api:
        return api.get(f"/images/{name}")


def test_the_listing_has_every_sites_images_with_their_sites_and_site_fields(
    fed: Federation, served: dict[str, Any]
) -> None:
    with fed.api() as api:
        listing = api.get("/images").json()
        assert not listing["partial"] and listing["warnings"] == []
        [tiny] = listing["images"]
        assert (tiny["name"], tiny["sites"]) == ("tiny", ["site-a", "site-b"])
        assert (tiny["state"], tiny["source"], tiny["available"]) == ("ready", "config", True)

        body = {"name": "deb", **served, "site": "site-a", "description": "one site"}
        registered = api.post("/images", json=body)
        assert registered.status_code == 201, registered.text
        deb = registered.json()
        assert (deb["owner"], deb["state"], deb["source"], deb["size"]) == (
            "alice",
            "pending",
            "url",
            served["size"],
        )
        assert deb["sites"] == ["site-a"]
        assert deb["registrations"] == [
            {"site": "site-a", "registered": True, "status": 201, "code": None, "message": None}
        ]
        assert site_image(fed, "site-a", "deb").json()["owner"] == "alice"
        assert site_image(fed, "site-b", "deb").status_code == 404

        by_name = {i["name"]: i for i in api.get("/images").json()["images"]}
        assert by_name["deb"]["sites"] == ["site-a"] and by_name["deb"]["size"] == served["size"]
        assert api.get("/images/deb").json()["sites"] == ["site-a"]
        assert api.get("/images/deb", params={"site": "site-b"}).status_code == 404
        assert api.get("/images/nothing").status_code == 404
        assert api.get("/images/deb", params={"site": "mars"}).status_code == 404
    with fed.api("bob") as bob:
        names = [i["name"] for i in bob.get("/images").json()["images"]]
        assert names == ["tiny"], "alice's private image is hers"
        assert bob.get("/images/deb").status_code == 404


def test_register_at_every_site_then_delete_at_one_and_then_the_other(
    fed: Federation, served: dict[str, Any]
) -> None:
    with fed.api() as api:
        both = api.post("/images", json={"name": "deb", **served, "all_sites": True})
        assert both.status_code == 201, both.text
        assert both.json()["sites"] == ["site-a", "site-b"]
        assert [(r["site"], r["registered"]) for r in both.json()["registrations"]] == [
            ("site-a", True),
            ("site-b", True),
        ]
        for site in ("site-a", "site-b"):
            assert site_image(fed, site, "deb").json()["owner"] == "alice"

        neither = api.post("/images", json={"name": "deb", **served, "all_sites": True})
        assert neither.status_code == 409, "every site already has it"
        error = neither.json()["error"]
        assert error["code"] == "placement_failed"
        assert {r["site"]: r["status"] for r in error["details"]["registrations"]} == {
            "site-a": 409,
            "site-b": 409,
        }
        local = {"name": "local", **served, "url": "file:///etc/hostname", "site": "site-a"}
        forbidden = api.post("/images", json=local)
        assert forbidden.status_code == 403, "file:// is for site admins, the site decides"
        where = api.post("/images", json={"name": "x", **served})
        assert where.status_code == 422, "site or all_sites is required"

        ambiguous = api.delete("/images/deb")
        assert ambiguous.status_code == 409
        assert ambiguous.json()["error"]["code"] == "ambiguous_image"
        gone = api.delete("/images/deb", params={"site": "site-a"})
        assert gone.status_code == 200 and gone.json()["site"] == "site-a"
        assert site_image(fed, "site-a", "deb").status_code == 404
        last = api.delete("/images/deb")  # only site-b has it now
        assert last.status_code == 200 and last.json()["site"] == "site-b"
        assert api.delete("/images/deb").status_code == 404


def save_snap(fed: Federation, api: httpx.Client) -> dict[str, Any]:
    """A VM at site-b stopped with ``save``: the image ``snap``, once ready."""
    created = api.post("/vms", json={"image": "tiny", "site": "site-b"})
    assert created.status_code == 202, created.text
    vm = created.json()["vms"][0]
    wait_for(lambda: api.get(f"/vms/{vm['id']}").json()["state"] == "running")
    stopped = api.post(f"/vms/{vm['id']}/stop", json={"save": {"name": "snap"}})
    assert stopped.status_code == 202, stopped.text

    def saved() -> dict[str, Any] | None:
        response = api.get("/images/snap")
        image: dict[str, Any] = response.json()
        return image if response.status_code == 200 and image["state"] == "ready" else None

    image: dict[str, Any] = wait_for(saved, what="the saved image")
    return image


def test_a_saved_image_is_the_users_at_the_site_shown_and_deleted_through_the_broker(
    fed: Federation,
) -> None:
    with fed.api() as api:
        image = save_snap(fed, api)
        assert (image["owner"], image["source"], image["sites"]) == ("alice", "saved", ["site-b"])
        assert site_image(fed, "site-b", "snap").json()["owner"] == "alice"
        listed = {i["name"]: i for i in api.get("/images").json()["images"]}
        assert listed["snap"]["sites"] == ["site-b"] and listed["snap"]["state"] == "ready"
        with fed.api("bob") as bob:
            assert bob.get("/images/snap").status_code == 404
            assert bob.delete("/images/snap", params={"site": "site-b"}).status_code == 404
        deleted = api.delete("/images/snap")
        assert deleted.status_code == 200 and deleted.json()["site"] == "site-b"
        assert site_image(fed, "site-b", "snap").status_code == 404


def test_a_users_saved_image_boots_through_the_broker_at_its_site(fed: Federation) -> None:
    with fed.api() as api:
        save_snap(fed, api)
        booted = api.post("/vms", json={"image": "snap"})
        assert booted.status_code == 202, booted.text
        vm = booted.json()["vms"][0]
        assert vm["site"] == "site-b", "the only site with alice's image (site-a is cheaper)"
        with fed.site_api("site-b", SITE_ADMIN_TOKEN) as site:
            there = site.get(f"/vms/{vm['site_vm_id']}").json()
        assert (there["image"], there["owner"]) == ("snap", "alice")
    with fed.api("bob") as bob:
        refused = bob.post("/vms", json={"image": "snap"})
        assert refused.status_code == 409, "bob has no image snap anywhere"
        assert (
            "neither cached nor fetchable" in refused.json()["error"]["details"]["sites"]["site-b"]
        )
