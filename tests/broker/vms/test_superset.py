"""The broker's create is the site's create: pools, addresses, host tags, static disks and
volumes go through placement and reach the chosen site, made there as the real user.

A broker and two site agents on fake hosts, as processes on loopback:

* ``site-a`` (free): a host tagged ``gpu`` and one without tags; pools ``public``
  (198.18.10.0/28) and ``lab`` (private, 198.19.10.0/24); images ``tiny`` and ``data``;
* ``site-b`` (dearer): one host; pool ``public`` (198.18.20.0/28); image ``tiny``.

Pools are in the 198.18.0.0/15 benchmark range and fake hosts send nothing anywhere.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
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

BROKER = "test-broker"  # the broker's [broker] name in fedenv


def pool(name: str, kind: str, cidr: str) -> str:
    return f'[[networks]]\nname = "{name}"\ntype = "{kind}"\ncidr = "{cidr}"\n\n'


@pytest.fixture
def fed(federation: Federation, tiny_image: Path, tmp_path: Path) -> Iterator[Federation]:
    data = tmp_path / "data.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(data), "8M"], check=True)
    federation.start_broker(["site-a", "site-b"])
    hosts_a = fake_hosts(4, 4)
    hosts_a[0]["tags"] = ["gpu"]
    federation.start_site(
        SiteSpec(
            "site-a",
            hosts_a,
            tiny_image_toml(tiny_image) + tiny_image_toml(data, "data"),
            extra=pool("public", "public", "198.18.10.0/28")
            + pool("lab", "private", "198.19.10.0/24"),
        )
    )
    federation.start_site(
        SiteSpec(
            "site-b",
            fake_hosts(4),
            tiny_image_toml(tiny_image),
            price=0.2,
            extra=pool("public", "public", "198.18.20.0/28"),
        )
    )
    federation.wait_sites(["site-a", "site-b"])
    yield federation


def create(api: httpx.Client, **body: Any) -> dict[str, Any]:
    body.setdefault("image", "tiny")
    response = api.post("/vms", json=body)
    assert response.status_code == 202, response.text
    vm: dict[str, Any] = response.json()["vms"][0]
    return vm


def at_site(fed: Federation, site: str, site_vm_id: str) -> dict[str, Any]:
    """The VM as its site shows it to a site admin."""
    with fed.site_api(site, SITE_ADMIN_TOKEN) as api:
        response = api.get(f"/vms/{site_vm_id}")
        assert response.status_code == 200, response.text
        vm: dict[str, Any] = response.json()
        return vm


def site_disks(fed: Federation, site: str, site_vm_id: str) -> list[dict[str, Any]]:
    with fed.site_api(site, SITE_ADMIN_TOKEN) as api:
        response = api.get(f"/vms/{site_vm_id}/disks")
        assert response.status_code == 200, response.text
        disks: list[dict[str, Any]] = response.json()["disks"]
        return disks


def test_pool_address_host_tag_and_static_disk_reach_the_site_made_as_the_user(
    fed: Federation,
) -> None:
    with fed.api() as api:
        vm = create(
            api,
            name="tagged",
            network="lab",
            address="198.19.10.7",
            host_tags=["gpu"],
            static_disks=["data"],
        )
        assert vm["site"] == "site-a", "only site-a has a pool named lab"
        there = at_site(fed, "site-a", vm["site_vm_id"])
        assert (there["network"], there["address"]) == ("lab", "198.19.10.7")
        assert there["host"] == "fake://host-0", "the host tagged gpu"
        assert (there["owner"], there["via"]) == ("alice", BROKER)
        assert [(d["kind"], d["image"]) for d in site_disks(fed, "site-a", vm["site_vm_id"])] == [
            ("static", "data")
        ]
        shown = api.get(f"/vms/{vm['id']}").json()
        assert (shown["network"], shown["address"], shown["host"]) == (
            "lab",
            "198.19.10.7",
            "fake://host-0",
        )
        # A pool both sites have: the cheaper one, and it gets that very pool.
        public = create(api, network="public")
        assert public["site"] == "site-a"
        assert at_site(fed, "site-a", public["site_vm_id"])["network"] == "public"
        on_b = create(api, network="public", preferred_sites=["site-b"])
        assert on_b["site"] == "site-b"
        assert at_site(fed, "site-b", on_b["site_vm_id"])["network"] == "public"


def test_a_network_type_is_placed_on_and_sent_to_a_site_with_such_a_pool(fed: Federation) -> None:
    with fed.api() as api:
        vm = create(api, network_type="private")
        assert vm["site"] == "site-a"
        there = at_site(fed, "site-a", vm["site_vm_id"])
        assert there["network"] == "lab", "the site received the pool placement chose"
        assert there["address"] is not None and there["address"].startswith("198.19.10.")


@pytest.mark.parametrize(
    "body",
    [
        {"network": "nowhere"},
        {"network_type": "local"},
        {"host_tags": ["fpga"]},
        {"static_disks": ["data"], "site": "site-b"},
        {"network": "lab", "address": "198.18.20.3"},
    ],
)
def test_what_no_site_has_is_409_with_the_reasons_per_site(
    fed: Federation, body: dict[str, Any]
) -> None:
    with fed.api() as api:
        response = api.post("/vms", json={"image": "tiny", **body})
        assert response.status_code == 409, response.text
        error = response.json()["error"]
        assert error["code"] == "placement_failed"
        sites = error["details"]["sites"]
        assert set(sites) <= {"site-a", "site-b"} and sites, sites
        assert all(isinstance(why, str) and why for why in sites.values())
        assert api.get("/vms").json()["vms"] == [], "nothing was left behind"
    assert fed.site_vms("site-a") == [] and fed.site_vms("site-b") == []


def test_a_vm_goes_where_its_volumes_are_and_the_site_gets_its_own_ids(fed: Federation) -> None:
    with fed.api() as api:
        volume = api.post("/volumes", json={"size_gib": 1, "site": "site-b"}).json()
        shared = api.post("/volumes", json={"size_gib": 1, "site": "site-b"}).json()
        vm = create(api, volumes=[volume["id"]], readonly_volumes=[shared["id"]])
        assert vm["site"] == "site-b", "pinned to its volumes' site although site-a is cheaper"
        there = at_site(fed, "site-b", vm["site_vm_id"])
        assert (there["owner"], there["via"]) == ("alice", BROKER)
        plugged = {
            d["volume_id"]: d["readonly"] for d in site_disks(fed, "site-b", vm["site_vm_id"])
        }
        assert plugged == {volume["site_volume_id"]: False, shared["site_volume_id"]: True}
        disks = api.get(f"/vms/{vm['id']}/disks").json()
        assert disks["vm_id"] == vm["id"]
        assert {(d["volume_id"], d["site"], d["vm_id"]) for d in disks["disks"]} == {
            (volume["id"], "site-b", vm["id"]),
            (shared["id"], "site-b", vm["id"]),
        }

        other = api.post("/volumes", json={"size_gib": 1, "site": "site-a"}).json()
        split = api.post("/vms", json={"image": "tiny", "volumes": [other["id"], shared["id"]]})
        assert split.status_code == 409 and "one site" in split.json()["error"]["message"]
        wrong = api.post(
            "/vms", json={"image": "tiny", "site": "site-a", "volumes": [volume["id"]]}
        )
        assert wrong.status_code == 409
        assert "site site-b" in wrong.json()["error"]["message"]
    with fed.api("bob") as bob:
        stolen = bob.post("/vms", json={"image": "tiny", "volumes": [other["id"]]})
        assert stolen.status_code == 404, "another user's volume does not exist for bob"


def test_disks_of_a_vm_through_the_broker(fed: Federation) -> None:
    with fed.api() as api:
        vm = create(api, site="site-a")
        wait_for(lambda: api.get(f"/vms/{vm['id']}").json()["state"] == "running")
        assert api.get(f"/vms/{vm['id']}/disks").json() == {"vm_id": vm["id"], "disks": []}
        static = api.post(f"/vms/{vm['id']}/disks", json={"static_disk": "data"})
        assert static.status_code == 200, static.text
        assert static.json() | {"device": "?"} == {
            "vm_id": vm["id"],
            "device": "?",
            "kind": "static",
            "volume_id": None,
            "image": "data",
            "readonly": True,
            "site": "site-a",
        }
        volume = api.post("/volumes", json={"size_gib": 1, "site": "site-a"}).json()
        plugged = api.post(f"/vms/{vm['id']}/disks", json={"volume": volume["id"]})
        assert plugged.status_code == 200, plugged.text
        assert plugged.json()["volume_id"] == volume["id"]
        assert len(site_disks(fed, "site-a", vm["site_vm_id"])) == 2

        elsewhere = api.post("/volumes", json={"size_gib": 1, "site": "site-b"}).json()
        refused = api.post(f"/vms/{vm['id']}/disks", json={"volume": elsewhere["id"]})
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "invalid_operation"

        device = static.json()["device"]
        unplugged = api.delete(f"/vms/{vm['id']}/disks/{device}")
        assert unplugged.status_code == 200 and unplugged.json()["image"] == "data"
        listed = api.get(f"/vms/{vm['id']}/disks").json()["disks"]
        assert [d["volume_id"] for d in listed] == [volume["id"]]
        # A device with no disk: the site's answer, passed on as it is.
        nothing = api.delete(f"/vms/{vm['id']}/disks/vdz")
        with fed.site_api("site-a", SITE_ADMIN_TOKEN) as site:
            direct = site.delete(f"/vms/{vm['site_vm_id']}/disks/vdz")
        assert nothing.status_code == direct.status_code and 400 <= direct.status_code < 500
        assert nothing.json()["error"]["code"] == direct.json()["error"]["code"]
        assert api.delete(f"/vms/{vm['id']}/disks/not-a-device").status_code == 404
    with fed.api("bob") as bob:
        assert bob.get(f"/vms/{vm['id']}/disks").status_code == 404


def test_sharing_with_a_group_one_is_not_in_is_refused_before_any_site_is_asked(
    fed: Federation,
) -> None:
    with fed.api() as api:
        response = api.post("/vms", json={"image": "tiny", "group": "atlas"})
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "forbidden"
        assert "not a member of group 'atlas'" in response.json()["error"]["message"]
        assert api.get("/vms").json()["vms"] == []
    assert fed.site_vms("site-a") == [] and fed.site_vms("site-b") == []


def test_a_group_member_acts_as_themselves_at_the_site(fed: Federation) -> None:
    """Erin kills Dave's VM shared with their group: the site authorises Erin, as Erin."""
    with fed.api("dave") as dave:
        created = dave.post("/vms", json={"image": "tiny", "group": "atlas"})
        assert created.status_code == 202, created.text
        vm = created.json()["vms"][0]
    with fed.api("erin") as erin:
        shown = erin.get(f"/vms/{vm['id']}")
        assert shown.status_code == 200, shown.text
        killed = erin.delete(f"/vms/{vm['id']}")
        assert killed.status_code == 200, killed.text
        assert killed.json()["state"] == "done"
    with fed.api("bob") as bob:  # not in the group: the broker's records say no
        assert bob.get(f"/vms/{vm['id']}").status_code == 404
    site_vm = next(v for v in fed.site_vms(vm["site"]) if v["id"] == vm["site_vm_id"])
    assert site_vm["owner"] == "dave" and site_vm["group"] == "atlas"
    with fed.site_api(vm["site"], SITE_ADMIN_TOKEN) as site:
        events = site.get(f"/vms/{vm['site_vm_id']}/events").json()["events"]
    # The site logged who killed it: Erin's own account there, not the broker's.
    assert any("erin" in e["reason"] for e in events), events
