"""Bad input to volumes, disks and networks: each a clear 4xx JSON error, and nothing changes.

Every case takes a snapshot of the site (volumes, their files, VMs, disks
plugged into domains, leases) before the request and checks it after.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.site_agent.conftest import FakeSite
from tests.site_agent.volumes.helpers import call, new_volume, ok, running_vm, snapshot

NO_SUCH = "00000000-0000-4000-8000-000000000000"
POOL = {
    "name": "public",
    "type": "public",
    "cidr": "198.18.10.0/29",
    "gateway": "198.18.10.1",
    "fixed": ["198.18.10.6"],
}


class World:
    """A site with alice's volumes and VMs, and bob's VM and private volume."""

    def __init__(self, site: FakeSite) -> None:
        self.site = site
        self.ids: dict[str, str] = {}

    async def build(self) -> World:
        site = self.site
        self.ids["vol"] = (await new_volume(site, size_gib=2, tag="data"))["id"]
        self.ids["attached"] = (await new_volume(site, tag="in-use"))["id"]
        self.ids["bobvol"] = (await new_volume(site, "bob", tag="bobs"))["id"]
        self.ids["vm"] = (await running_vm(site))["id"]
        self.ids["bobvm"] = (await running_vm(site, "bob"))["id"]
        await ok(
            site, "POST", f"/volumes/{self.ids['attached']}/attach", body={"vm_id": self.ids["vm"]}
        )
        failed = await site.create(name="will-fail")
        self.ids["failedvm"] = failed["id"]
        await ok(site, "DELETE", f"/vms/{failed['id']}")  # now done
        self.ids["leased"] = "198.18.10.6"
        await site.wait((await site.create(address="198.18.10.6"))["id"])
        return self

    def fill(self, text: str) -> str:
        for key, value in self.ids.items():
            text = text.replace("{" + key + "}", value)
        return text


def _fill(world: World, value: Any) -> Any:
    if isinstance(value, str):
        return world.fill(value)
    if isinstance(value, list):
        return [_fill(world, v) for v in value]
    if isinstance(value, dict):
        return {k: _fill(world, v) for k, v in value.items()}
    return value


CASES = [
    # ----- volumes: create
    ("POST", "/volumes", "alice", {"size_gib": 0}, 422, "size_gib"),
    ("POST", "/volumes", "alice", {"size_gib": 2000}, 422, "size_gib"),
    ("POST", "/volumes", "alice", {"size_gib": -1}, 422, "size_gib"),
    ("POST", "/volumes", "alice", {}, 422, "size_gib is required"),
    ("POST", "/volumes", "alice", {"size_gib": 1, "tag": "a\nb"}, 422, "tag"),
    ("POST", "/volumes", "alice", {"size_gib": 1, "colour": "red"}, 422, "colour"),
    ("POST", "/volumes", "alice", {"size_gib": 1, "visibility": "secret"}, 422, "visibility"),
    ("POST", "/volumes", "alice", {"cow_of": "{vol}", "image": "tiny"}, 422, "not both"),
    ("POST", "/volumes", "alice", {"cow_of": "../../etc/passwd"}, 422, "cow_of"),
    ("POST", "/volumes", "alice", {"cow_of": NO_SUCH}, 422, "no volume with id"),
    ("POST", "/volumes", "alice", {"cow_of": "{bobvol}"}, 422, "no volume with id"),
    ("POST", "/volumes", "alice", {"cow_of": "{vol}", "size_gib": 1}, 422, "smaller than"),
    ("POST", "/volumes", "alice", {"cow_of": "{vol}", "size_gib": 2000}, 422, "size_gib"),
    ("POST", "/volumes", "alice", {"image": "no-such", "size_gib": 1}, 422, "unknown image"),
    ("POST", "/volumes", "alice", {"image": "../tiny", "size_gib": 1}, 422, "image"),
    # ----- volumes: read, update, delete
    ("GET", "/volumes/..%2F..%2Fetc%2Fpasswd", "alice", None, 404, "no volume"),
    ("GET", "/volumes/not-a-volume", "alice", None, 404, "no volume"),
    ("GET", "/volumes/{bobvol}", "alice", None, 404, "no volume"),
    ("GET", "/volumes?tag=(", "alice", None, 422, "not a regular expression"),
    ("GET", "/volumes?tag=(a%2B)%2B", "alice", None, 422, "nested quantifiers"),
    ("GET", "/volumes?visibility=secret", "alice", None, 422, "visibility"),
    ("PATCH", "/volumes/{vol}", "alice", {}, 422, "tag and/or visibility"),
    ("PATCH", "/volumes/{vol}", "alice", {"owner": "bob"}, 422, "owner"),
    ("PATCH", "/volumes/{bobvol}", "alice", {"tag": "x"}, 404, "no volume"),
    ("DELETE", "/volumes/{bobvol}", "alice", None, 404, "no volume"),
    ("DELETE", "/volumes/{attached}", "alice", None, 409, "detach first"),
    ("DELETE", "/volumes/..%2Fvolumes", "alice", None, 404, "no volume"),
    # ----- attach / detach
    ("POST", "/volumes/{vol}/attach", "alice", {"vm_id": "{bobvm}"}, 404, "no VM"),
    ("POST", "/volumes/{vol}/attach", "alice", {"vm_id": NO_SUCH}, 404, "no VM"),
    ("POST", "/volumes/{vol}/attach", "alice", {"vm_id": "../x"}, 422, "vm_id"),
    ("POST", "/volumes/{bobvol}/attach", "alice", {"vm_id": "{vm}"}, 404, "no volume"),
    ("POST", "/volumes/{vol}/attach", "alice", {"vm_id": "{failedvm}"}, 409, "only while it runs"),
    ("POST", "/volumes/{attached}/attach", "alice", {"vm_id": "{vm}"}, 409, "already attached"),
    ("POST", "/volumes/{vol}/detach", "alice", {}, 409, "not attached"),
    ("POST", "/volumes/{vol}/detach", "alice", {"vm_id": "{vm}"}, 409, "not attached"),
    ("POST", "/volumes/{attached}/detach", "bob", {}, 404, "no volume"),
    ("POST", "/volumes/{vol}/detach", "alice", {"vm_id": "{bobvm}"}, 404, "no VM"),
    ("DELETE", "/vms/{vm}/disks/vdq", "alice", None, 409, "not attached"),
    ("DELETE", "/vms/{vm}/disks/..%2Fvda", "alice", None, 404, "no disk"),
    ("DELETE", "/vms/{bobvm}/disks/vdc", "alice", None, 404, "no VM"),
    ("GET", "/vms/{bobvm}/disks", "alice", None, 404, "no VM"),
    (
        "POST",
        "/vms/{vm}/disks",
        "alice",
        {"volume": "{vol}", "static_disk": "tiny"},
        422,
        "exactly one",
    ),
    ("POST", "/vms/{vm}/disks", "alice", {"static_disk": "no-such"}, 422, "unknown image"),
    ("POST", "/vms/{vm}/disks", "alice", {"volume": "../etc"}, 422, "volume"),
    # ----- VM create with disks
    ("POST", "/vms", "alice", {"image": "tiny", "volumes": ["../../x"]}, 422, "volumes"),
    ("POST", "/vms", "alice", {"image": "tiny", "volumes": [NO_SUCH]}, 422, "no volume with id"),
    ("POST", "/vms", "alice", {"image": "tiny", "volumes": ["{bobvol}"]}, 422, "no volume"),
    ("POST", "/vms", "alice", {"image": "tiny", "volumes": ["{attached}"]}, 409, "other VM"),
    ("POST", "/vms", "alice", {"image": "tiny", "count": 2, "volumes": ["{vol}"]}, 422, "count 1"),
    (
        "POST",
        "/vms",
        "alice",
        {"image": "tiny", "volumes": ["{vol}"], "readonly_volumes": ["{vol}"]},
        422,
        "more than once",
    ),
    ("POST", "/vms", "alice", {"image": "tiny", "static_disks": ["nope"]}, 422, "unknown image"),
    # ----- networks
    ("POST", "/vms", "alice", {"image": "tiny", "address": "198.18.99.9"}, 422, "not in pool"),
    ("POST", "/vms", "alice", {"image": "tiny", "address": "198.18.10.1"}, 422, "not in pool"),
    ("POST", "/vms", "alice", {"image": "tiny", "address": "198.18.10.7"}, 422, "not in pool"),
    ("POST", "/vms", "alice", {"image": "tiny", "address": "not-an-ip"}, 422, "address"),
    ("POST", "/vms", "alice", {"image": "tiny", "address": "{leased}"}, 409, "already leased"),
    ("POST", "/vms", "alice", {"image": "tiny", "network": "dmz"}, 422, "no network 'dmz'"),
    ("POST", "/vms", "alice", {"image": "tiny", "network": "../x"}, 422, "network"),
    (
        "POST",
        "/vms",
        "alice",
        {"image": "tiny", "count": 2, "address": "198.18.10.3"},
        422,
        "count 1",
    ),
    ("GET", "/networks/dmz", "alice", None, 404, "no network"),
    ("GET", "/networks/..%2F..%2Fetc", "alice", None, 404, "no network"),
]


@pytest.mark.parametrize(
    ("method", "path", "user", "body", "status", "needle"),
    CASES,
    ids=[f"{c[0]} {c[1]} {c[4]} {c[5]}" for c in CASES],
)
async def test_refused_and_nothing_changed(
    make_site: Any,
    method: str,
    path: str,
    user: str,
    body: Any,
    status: int,
    needle: str,
) -> None:
    site = await make_site(networks=[POOL])
    world = await World(site).build()
    before = await snapshot(site)
    got, data = await call(site, method, world.fill(path), user, _fill(world, body))
    assert got == status, data
    error = data["error"]
    assert needle in error["message"] or needle in str(error.get("details")), error
    assert await snapshot(site) == before


async def test_quota_exceeded_changes_nothing(make_site: Any) -> None:
    site = await make_site(quotas={"volumes_count": 2, "volumes_total_gib": 10})
    await new_volume(site, size_gib=6)
    before = await snapshot(site)
    status, data = await call(site, "POST", "/volumes", body={"size_gib": 5})
    assert status == 403 and data["error"]["code"] == "quota_exceeded"
    assert "alice uses 6 GiB; 5 GiB more would pass the limit of 10 GiB" in data["error"]["message"]
    assert await snapshot(site) == before
    await new_volume(site, size_gib=4)
    before = await snapshot(site)
    status, data = await call(site, "POST", "/volumes", body={"size_gib": 1})
    assert status == 403 and data["error"]["code"] == "quota_exceeded"
    assert "alice has 2 of 2 volumes allowed" in data["error"]["message"]
    status, data = await call(site, "POST", "/volumes", body={"cow_of": NO_SUCH})
    assert status == 422  # bad input is reported before the quota
    assert await snapshot(site) == before
    # Quotas are per account: bob is not affected by alice's volumes.
    await new_volume(site, "bob", size_gib=10)


async def test_networks_requested_from_a_site_without_networks(make_site: Any) -> None:
    site = await make_site()
    before = await snapshot(site)
    for body in ({"network": "public"}, {"address": "198.18.10.3"}):
        status, data = await call(site, "POST", "/vms", body={"image": "tiny", **body})
        assert status == 422 and "this site has no networks" in data["error"]["message"], data
    assert await snapshot(site) == before
