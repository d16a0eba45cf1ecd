"""Persistent volumes and static disks through the site API on fake hosts (both databases)."""

from __future__ import annotations

import asyncio
from typing import Any

from site_agent.api.keys import VM_MANAGER
from tests.site_agent.conftest import auth
from tests.site_agent.volumes.helpers import (
    call,
    domain,
    new_volume,
    ok,
    qemu_info,
    running_vm,
    volume_files,
    volumes_dir,
)

GIB = 1024**3


async def test_create_show_update_list_delete(make_site: Any) -> None:
    site = await make_site()
    volume = await new_volume(site, size_gib=5, tag="data-1")
    assert (volume["state"], volume["size_gib"], volume["origin"]) == ("ready", 5, "empty")
    assert (volume["owner"], volume["visibility"], volume["attached"]) == ("alice", "private", 0)
    path = volumes_dir(site) / f"{volume['id']}.qcow2"
    info = qemu_info(path)
    assert (info["format"], info["virtual-size"]) == ("qcow2", 5 * GIB)
    assert info["actual-size"] < 16 * 1024 * 1024  # sparse
    assert volumes_dir(site).stat().st_mode & 0o777 == 0o755

    shown = await ok(site, "GET", f"/volumes/{volume['id']}")
    assert shown["id"] == volume["id"]
    updated = await ok(
        site, "PATCH", f"/volumes/{volume['id']}", body={"tag": "renamed", "visibility": "public"}
    )
    assert (updated["tag"], updated["visibility"]) == ("renamed", "public")

    await new_volume(site, tag="other")
    listed = (await ok(site, "GET", "/volumes?tag=^ren"))["volumes"]
    assert [v["id"] for v in listed] == [volume["id"]]
    assert len((await ok(site, "GET", "/volumes?visibility=private"))["volumes"]) == 1

    deleted = await ok(site, "DELETE", f"/volumes/{volume['id']}")
    assert deleted == {"id": volume["id"], "deleted": True}
    assert not path.exists()
    status, body = await call(site, "GET", f"/volumes/{volume['id']}")
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_visibility_and_ownership(make_site: Any) -> None:
    site = await make_site()
    private = await new_volume(site, tag="mine")
    public = await new_volume(site, tag="shared", visibility="public")
    # bob sees the public volume only, and cannot change or delete it.
    seen = (await ok(site, "GET", "/volumes", "bob"))["volumes"]
    assert [v["id"] for v in seen] == [public["id"]]
    status, _ = await call(site, "GET", f"/volumes/{private['id']}", "bob")
    assert status == 404
    status, body = await call(site, "PATCH", f"/volumes/{public['id']}", "bob", {"tag": "x"})
    assert status == 403 and "only its owner" in body["error"]["message"]
    status, body = await call(site, "DELETE", f"/volumes/{public['id']}", "bob")
    assert status == 403
    status, _ = await call(site, "DELETE", f"/volumes/{private['id']}", "bob")
    assert status == 404
    # Admins see everything with all=true, and may filter by owner.
    every = (await ok(site, "GET", "/volumes?all=true&owner=alice", "root"))["volumes"]
    assert {v["id"] for v in every} == {private["id"], public["id"]}
    # Without all=true an admin lists like anyone: own volumes and public ones.
    plain = (await ok(site, "GET", "/volumes", "root"))["volumes"]
    assert [v["id"] for v in plain] == [public["id"]]


async def test_copy_on_write_volumes_and_their_origin(make_site: Any) -> None:
    site = await make_site()
    origin = await new_volume(site, size_gib=2)
    copy = await new_volume(site, cow_of=origin["id"], size_gib=None)
    assert (copy["origin"], copy["cow_of"], copy["size_gib"]) == ("volume", origin["id"], 2)
    bigger = await new_volume(site, cow_of=origin["id"], size_gib=3)
    info = qemu_info(volumes_dir(site) / f"{copy['id']}.qcow2")
    assert info["backing-filename"].endswith(f"{origin['id']}.qcow2")
    assert qemu_info(volumes_dir(site) / f"{bigger['id']}.qcow2")["virtual-size"] == 3 * GIB
    status, body = await call(
        site, "POST", "/volumes", body={"cow_of": origin["id"], "size_gib": 1}
    )
    assert status == 422 and "smaller than volume" in body["error"]["message"]
    # The origin must not change any more: no read-write attach, no delete while copies exist.
    vm = await running_vm(site)
    status, body = await call(
        site, "POST", f"/volumes/{origin['id']}/attach", body={"vm_id": vm["id"]}
    )
    assert status == 409 and "only be attached read-only" in body["error"]["message"]
    disk = await ok(
        site,
        "POST",
        f"/volumes/{origin['id']}/attach",
        body={"vm_id": vm["id"], "readonly": True},
    )
    assert disk["readonly"] is True
    status, body = await call(site, "DELETE", f"/volumes/{origin['id']}")
    assert status == 409 and body["error"]["code"] == "volume_in_use"
    await ok(site, "DELETE", f"/vms/{vm['id']}")
    status, body = await call(site, "DELETE", f"/volumes/{origin['id']}")
    assert status == 409 and "origin of copy-on-write" in body["error"]["message"]
    await ok(site, "DELETE", f"/volumes/{copy['id']}")
    await ok(site, "DELETE", f"/volumes/{bigger['id']}")
    await ok(site, "DELETE", f"/volumes/{origin['id']}")
    assert volume_files(site) == []


async def test_no_copy_on_write_of_a_volume_attached_read_write(make_site: Any) -> None:
    site = await make_site()
    volume = await new_volume(site)
    vm = await running_vm(site)
    await ok(site, "POST", f"/volumes/{volume['id']}/attach", body={"vm_id": vm["id"]})
    status, body = await call(site, "POST", "/volumes", body={"cow_of": volume["id"]})
    assert status == 409 and "attached read-write" in body["error"]["message"]


async def test_volume_from_an_image(make_site: Any) -> None:
    site = await make_site()
    volume = await new_volume(site, image="tiny", size_gib=1, tag="from-image")
    assert volume["origin"] == "image" and volume["image"] == "tiny"
    assert volume["state"] in ("creating", "ready")
    ready = await ok(site, "GET", f"/volumes/{volume['id']}?wait=ready&timeout=30")
    assert ready["state"] == "ready", ready
    info = qemu_info(volumes_dir(site) / f"{volume['id']}.qcow2")
    assert info["virtual-size"] == GIB and "backing-filename" not in info
    status, body = await call(site, "POST", "/volumes", body={"image": "nope", "size_gib": 1})
    assert status == 422 and "unknown image" in body["error"]["message"]


async def test_attach_detach_running_vm(make_site: Any) -> None:
    site = await make_site()
    volume = await new_volume(site)
    vm = await running_vm(site)
    disk = await ok(site, "POST", f"/volumes/{volume['id']}/attach", body={"vm_id": vm["id"]})
    assert disk == {
        "vm_id": vm["id"],
        "device": "vdc",
        "kind": "volume",
        "volume_id": volume["id"],
        "image": None,
        "readonly": False,
    }
    plugged = domain(site, vm["id"]).disks["vdc"]
    assert plugged.path.name == f"{volume['id']}.qcow2" and not plugged.readonly
    shown = await ok(site, "GET", f"/volumes/{volume['id']}")
    assert shown["attachments"] == [{"vm_id": vm["id"], "device": "vdc", "readonly": False}]
    assert (await ok(site, "GET", f"/vms/{vm['id']}/disks"))["disks"] == [disk]

    detached = await ok(site, "POST", f"/volumes/{volume['id']}/detach", body={})
    assert detached["device"] == "vdc"
    assert "vdc" not in domain(site, vm["id"]).disks
    status, body = await call(site, "POST", f"/volumes/{volume['id']}/detach", body={})
    assert status == 409 and body["error"]["code"] == "not_attached"
    events = (await ok(site, "GET", f"/vms/{vm['id']}/events"))["events"]
    reasons = [e["reason"] for e in events]
    assert f"volume {volume['id']} attached at vdc (read-write)" in reasons
    assert f"volume {volume['id']} detached from vdc" in reasons


async def test_read_write_is_exclusive_read_only_is_shared(make_site: Any) -> None:
    site = await make_site()
    volume = await new_volume(site, visibility="public")
    first, second = await running_vm(site), await running_vm(site)
    await ok(site, "POST", f"/volumes/{volume['id']}/attach", body={"vm_id": first["id"]})
    status, body = await call(
        site, "POST", f"/volumes/{volume['id']}/attach", body={"vm_id": second["id"]}
    )
    assert status == 409 and "read-write to one VM only" in body["error"]["message"]
    status, body = await call(
        site,
        "POST",
        f"/volumes/{volume['id']}/attach",
        body={"vm_id": second["id"], "readonly": True},
    )
    assert status == 409 and "attached read-write to another VM" in body["error"]["message"]
    await ok(site, "DELETE", f"/vms/{first['id']}/disks/vdc")
    # Read-only: any number of VMs, also other users' (the volume is public).
    bobs = await running_vm(site, "bob")
    for vm_id, user in ((first["id"], "alice"), (second["id"], "alice"), (bobs["id"], "bob")):
        disk = await ok(
            site,
            "POST",
            f"/volumes/{volume['id']}/attach",
            user,
            {"vm_id": vm_id, "readonly": True},
        )
        plugged = domain(site, vm_id).disks[disk["device"]]
        assert plugged.readonly and plugged.shareable
    shown = await ok(site, "GET", f"/volumes/{volume['id']}")
    assert shown["attached"] == 3 and len(shown["attachments"]) == 2  # bob's VM is only counted
    status, body = await call(
        site, "POST", f"/volumes/{volume['id']}/attach", body={"vm_id": first["id"]}
    )
    assert status == 409  # already attached to this VM
    # A non-owner may not write to a public volume.
    other = await new_volume(site, visibility="public")
    status, body = await call(
        site, "POST", f"/volumes/{other['id']}/attach", "bob", {"vm_id": bobs["id"]}
    )
    assert status == 403 and "read-only only" in body["error"]["message"]
    # It cannot turn private while bob's VM uses it.
    status, body = await call(
        site, "PATCH", f"/volumes/{volume['id']}", body={"visibility": "private"}
    )
    assert status == 409 and "other users" in body["error"]["message"]


async def test_kill_detaches_but_keeps_the_volume(make_site: Any) -> None:
    site = await make_site()
    volume = await new_volume(site)
    vm = await running_vm(site)
    await ok(site, "POST", f"/volumes/{volume['id']}/attach", body={"vm_id": vm["id"]})
    status, body = await call(site, "DELETE", f"/volumes/{volume['id']}")
    assert status == 409 and "detach first" in body["error"]["message"]
    killed = await ok(site, "DELETE", f"/vms/{vm['id']}")
    assert "1 disk(s) detached" in killed["state_reason"]
    shown = await ok(site, "GET", f"/volumes/{volume['id']}")
    assert (shown["attached"], shown["state"]) == (0, "ready")
    assert (volumes_dir(site) / f"{volume['id']}.qcow2").exists()
    # ... and it can be attached to the next VM.
    again = await running_vm(site)
    await ok(site, "POST", f"/volumes/{volume['id']}/attach", body={"vm_id": again["id"]})


async def test_volumes_and_static_disks_at_create(make_site: Any) -> None:
    site = await make_site()
    data = await new_volume(site, tag="data")
    shared = await new_volume(site, tag="shared")
    vm = await running_vm(
        site,
        volumes=[data["id"]],
        readonly_volumes=[shared["id"]],
        static_disks=["tiny"],
    )
    spec_disks = {d.target: d for d in domain(site, vm["id"]).spec.disks}
    assert list(spec_disks) == ["vda", "vdb", "vdc", "vdd", "vde"]
    assert spec_disks["vdc"].path.name == f"{data['id']}.qcow2" and not spec_disks["vdc"].readonly
    assert spec_disks["vdd"].readonly and spec_disks["vdd"].shareable
    assert spec_disks["vde"].readonly and spec_disks["vde"].path == site.config.images[0].disk
    disks = (await ok(site, "GET", f"/vms/{vm['id']}/disks"))["disks"]
    assert [(d["device"], d["kind"], d["readonly"]) for d in disks] == [
        ("vdc", "volume", False),
        ("vdd", "volume", True),
        ("vde", "static", True),
    ]
    # Disks attached at boot can be detached while running (a pain of the old system).
    await ok(site, "DELETE", f"/vms/{vm['id']}/disks/vdc")
    await ok(site, "DELETE", f"/vms/{vm['id']}/disks/vde")
    assert sorted(domain(site, vm["id"]).disks) == ["vda", "vdb", "vdd"]
    # The freed device is reused first.
    disk = await ok(site, "POST", f"/vms/{vm['id']}/disks", body={"static_disk": "tiny"})
    assert (disk["device"], disk["kind"], disk["readonly"]) == ("vdc", "static", True)
    # Several VMs share one static disk (read-only, shareable, the image's own file).
    other = await running_vm(site, count=2, static_disks=["tiny"])
    assert domain(site, other["id"]).spec.disks[2].path == site.config.images[0].disk


async def test_a_failed_create_detaches_its_volumes(make_site: Any) -> None:
    site = await make_site(hosts={"fake://only": (8, 16384)})
    volume = await new_volume(site)
    site.drivers["fake://only"].fail_next_start = "boom"
    vm = await site.create(volumes=[volume["id"]])
    assert (await site.wait(vm["id"]))["state"] == "failed"
    assert (await ok(site, "GET", f"/volumes/{volume['id']}"))["attached"] == 0


async def test_concurrent_read_write_attaches_give_one_winner(make_site: Any) -> None:
    site = await make_site()
    volume = await new_volume(site)
    vms = [await running_vm(site) for _ in range(4)]
    results = await asyncio.gather(
        *(
            call(site, "POST", f"/volumes/{volume['id']}/attach", body={"vm_id": vm["id"]})
            for vm in vms
        )
    )
    assert sorted(status for status, _ in results) == [200, 409, 409, 409]
    assert (await ok(site, "GET", f"/volumes/{volume['id']}"))["attached"] == 1


async def test_reconcile_forgets_attachments_of_finished_vms(make_site: Any) -> None:
    site = await make_site(hosts={"fake://only": (8, 16384)})
    volume = await new_volume(site)
    vm = await running_vm(site)
    await ok(site, "POST", f"/volumes/{volume['id']}/attach", body={"vm_id": vm["id"]})
    del site.drivers["fake://only"].domains[vm["id"]]
    await site.client.app[VM_MANAGER].reconcile()
    assert (await site.wait(vm["id"]))["state"] == "failed"
    assert (await ok(site, "GET", f"/volumes/{volume['id']}"))["attached"] == 0


async def test_idempotency_key_makes_one_volume(make_site: Any) -> None:
    site = await make_site()
    headers = {**auth("alice"), "Idempotency-Key": "vol-retry-1"}
    body = {"size_gib": 2, "tag": "once"}
    answers = await asyncio.gather(
        *(site.client.post("/api/v1/volumes", json=body, headers=headers) for _ in range(3))
    )
    assert [r.status for r in answers] == [202, 202, 202]
    assert len({(await r.json())["id"] for r in answers}) == 1
    listed = await ok(site, "GET", "/volumes")
    assert [v["tag"] for v in listed["volumes"]] == ["once"]
    assert len(volume_files(site)) == 1
    reused = await site.client.post("/api/v1/volumes", json={"size_gib": 3}, headers=headers)
    assert reused.status == 409
    assert (await reused.json())["error"]["code"] == "idempotency_key_reused"
    assert len(volume_files(site)) == 1
