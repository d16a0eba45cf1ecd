"""The /vms API on fake hypervisor hosts: lifecycle, ownership, idempotency, bad input.

Real QEMU guests are exercised in test_vm_real.py; here the hypervisor is the
FakeDriver (which prints a fake readiness line) so the API's own behaviour is
tested quickly against SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from site_agent.compute.errors import DomainCreateFailed
from tests.site_agent.conftest import auth

NO_SUCH_ID = "00000000-0000-4000-8000-000000000000"


async def test_create_runs_to_ready_and_records_every_transition(make_site: Any) -> None:
    site = await make_site()
    vm = await site.create(name="web-1", instance_type="t1.micro", context={"ROLE": "web"})
    assert vm["state"] == "pending"
    assert (vm["vcpus"], vm["memory_mib"], vm["instance_type"]) == (1, 256, "t1.micro")
    ready = await site.wait(vm["id"])
    assert ready["state"] == "running" and ready["ready"] is True
    resp = await site.client.get(f"/api/v1/vms/{vm['id']}/events", headers=auth("alice"))
    events = (await resp.json())["events"]
    states = [e["to_state"] for e in events if e["to_state"]]
    assert states == ["pending", "prolog", "boot", "running"]
    assert all(e["reason"] for e in events)
    assert any("guest ready" in e["reason"] for e in events)


async def test_kill_frees_the_host_and_quarantines_files(make_site: Any) -> None:
    site = await make_site(hosts={"fake://only": (8, 16384)})
    vm = await site.create()
    await site.wait(vm["id"])
    driver = site.drivers["fake://only"]
    assert vm["id"] in driver.domains
    resp = await site.client.delete(f"/api/v1/vms/{vm['id']}", headers=auth("alice"))
    assert resp.status == 200
    body = await resp.json()
    assert body["state"] == "done"
    assert vm["id"] not in driver.domains
    state_dir = site.config.site.state_dir
    assert not (state_dir / "vms" / vm["id"]).exists()
    assert (state_dir / "quarantine" / vm["id"] / "root.qcow2").exists()
    resp = await site.client.get("/api/v1/quarantine", headers=auth("root"))
    assert [e["vm_id"] for e in (await resp.json())["entries"]] == [vm["id"]]
    # Killing again is harmless.
    again = await site.client.delete(f"/api/v1/vms/{vm['id']}", headers=auth("alice"))
    assert again.status == 200 and (await again.json())["state"] == "done"


async def test_stop_powers_off_cleanly(make_site: Any) -> None:
    site = await make_site()
    vm = await site.create()
    await site.wait(vm["id"])
    resp = await site.client.post(f"/api/v1/vms/{vm['id']}/stop", headers=auth("alice"))
    assert resp.status == 202
    assert (await resp.json())["state"] == "shutdown"
    done = await site.wait(vm["id"], "running")
    for _ in range(50):
        if done["state"] == "done":
            break
        await asyncio.sleep(0.1)
        done = await site.wait(vm["id"], "running")
    assert done["state"] == "done"
    events = await (
        await site.client.get(f"/api/v1/vms/{vm['id']}/events", headers=auth("alice"))
    ).json()
    assert any("powered off cleanly" in e["reason"] for e in events["events"])


async def test_stop_destroys_a_guest_that_ignores_acpi(make_site: Any) -> None:
    site = await make_site(hosts={"fake://deaf": (4, 8192)})
    site.drivers["fake://deaf"].acpi_poweroff = False
    vm = await site.create()
    await site.wait(vm["id"])
    await site.client.post(f"/api/v1/vms/{vm['id']}/stop", headers=auth("alice"))
    for _ in range(60):
        current = await site.wait(vm["id"], "running")
        if current["state"] == "done":
            break
        await asyncio.sleep(0.1)
    assert current["state"] == "done"
    assert "destroyed after stop timeout" in current["state_reason"]
    assert vm["id"] not in site.drivers["fake://deaf"].domains


async def test_reboot_waits_for_readiness_again(make_site: Any) -> None:
    site = await make_site()
    vm = await site.create()
    await site.wait(vm["id"])
    resp = await site.client.post(f"/api/v1/vms/{vm['id']}/reboot", headers=auth("alice"))
    assert resp.status == 200
    assert (await resp.json())["ready"] is False
    again = await site.wait(vm["id"])
    assert again["ready"] is True
    console = await (
        await site.client.get(f"/api/v1/vms/{vm['id']}/console", headers=auth("alice"))
    ).json()
    assert console["output"].count("STRATUS-READY") == 2


async def test_failed_start_leaves_nothing_behind(make_site: Any) -> None:
    site = await make_site(hosts={"fake://flaky": (8, 16384)})
    site.drivers["fake://flaky"].fail_next_start = "simulated libvirt error"
    vm = await site.create()
    final = await site.wait(vm["id"], "running")
    assert final["state"] == "failed"
    assert "simulated libvirt error" in final["state_reason"]
    assert site.drivers["fake://flaky"].domains == {}
    assert not (site.config.site.state_dir / "vms" / vm["id"]).exists()


async def test_hypervisor_error_during_kill_is_503_and_a_retry_finishes(make_site: Any) -> None:
    site = await make_site(hosts={"fake://h": (8, 16384)}, vm={"monitor_interval_seconds": 600})
    vm = await site.create()
    await site.wait(vm["id"])
    site.drivers["fake://h"].fail_next("destroy", DomainCreateFailed("boom"))
    resp = await site.client.delete(f"/api/v1/vms/{vm['id']}", headers=auth("alice"))
    assert resp.status == 503
    error = (await resp.json())["error"]
    assert error["code"] == "hypervisor_error" and "boom" in error["message"]
    shown = await (await site.client.get(f"/api/v1/vms/{vm['id']}", headers=auth("alice"))).json()
    assert shown["state"] == "shutdown"
    retry = await site.client.delete(f"/api/v1/vms/{vm['id']}", headers=auth("alice"))
    assert retry.status == 200 and (await retry.json())["state"] == "done"
    assert vm["id"] not in site.drivers["fake://h"].domains


async def test_monitor_finishes_an_interrupted_kill(make_site: Any) -> None:
    site = await make_site(hosts={"fake://h": (8, 16384)}, vm={"monitor_interval_seconds": 0.2})
    vm = await site.create()
    await site.wait(vm["id"])
    site.drivers["fake://h"].fail_next("destroy", DomainCreateFailed("boom"))
    resp = await site.client.delete(f"/api/v1/vms/{vm['id']}", headers=auth("alice"))
    assert resp.status == 503
    for _ in range(50):
        shown = await (
            await site.client.get(f"/api/v1/vms/{vm['id']}", headers=auth("alice"))
        ).json()
        if shown["state"] == "done":
            break
        await asyncio.sleep(0.1)
    assert shown["state"] == "done"
    assert vm["id"] not in site.drivers["fake://h"].domains


async def test_monitor_notices_a_guest_that_powers_itself_off(make_site: Any) -> None:
    site = await make_site(hosts={"fake://h": (8, 16384)}, vm={"monitor_interval_seconds": 0.2})
    vm = await site.create()
    await site.wait(vm["id"])
    site.drivers["fake://h"].guest_poweroff(vm["id"])
    for _ in range(50):
        shown = await (
            await site.client.get(f"/api/v1/vms/{vm['id']}", headers=auth("alice"))
        ).json()
        if shown["state"] == "done":
            break
        await asyncio.sleep(0.1)
    assert shown["state"] == "done"
    assert "powered itself off" in shown["state_reason"]


async def test_users_see_only_their_own_vms(make_site: Any) -> None:
    site = await make_site()
    mine = await site.create("alice")
    theirs = await site.create("bob")
    listed = await (await site.client.get("/api/v1/vms", headers=auth("alice"))).json()
    assert [v["id"] for v in listed["vms"]] == [mine["id"]]
    for method, path in (("GET", ""), ("DELETE", ""), ("POST", "/stop"), ("GET", "/console")):
        resp = await site.client.request(
            method, f"/api/v1/vms/{theirs['id']}{path}", headers=auth("alice")
        )
        assert resp.status == 404, (method, path)
    admin = await (await site.client.get("/api/v1/vms?all=true", headers=auth("root"))).json()
    assert {v["id"] for v in admin["vms"]} == {mine["id"], theirs["id"]}


async def test_placement_spreads_and_refuses_when_full(make_site: Any) -> None:
    site = await make_site(hosts={"fake://a": (2, 2048), "fake://b": (2, 1024)})
    first = await site.create(vcpus=1, memory_mib=1024)
    assert first["host"] == "fake://a"  # most free memory first
    second = await site.create(vcpus=1, memory_mib=1024)
    third = await site.create(vcpus=1, memory_mib=1024)
    assert sorted([second["host"], third["host"]]) == ["fake://a", "fake://b"]
    resp = await site.client.post(
        "/api/v1/vms", json={"image": "tiny", "vcpus": 1, "memory_mib": 1024}, headers=auth("alice")
    )
    assert resp.status == 409
    error = (await resp.json())["error"]
    assert error["code"] == "no_capacity"
    assert set(error["details"]["hosts"]) == {"fake://a", "fake://b"}


async def test_count_creates_several_with_suffixed_names(make_site: Any) -> None:
    site = await make_site()
    resp = await site.client.post(
        "/api/v1/vms", json={"image": "tiny", "count": 3, "name": "node"}, headers=auth("alice")
    )
    assert resp.status == 202
    vms = (await resp.json())["vms"]
    assert [v["name"] for v in vms] == ["node-0", "node-1", "node-2"]
    for vm in vms:
        assert (await site.wait(vm["id"]))["ready"]


async def test_idempotency_key_makes_one_vm(make_site: Any) -> None:
    site = await make_site()
    headers = {**auth("alice"), "Idempotency-Key": "retry-123"}
    body = {"image": "tiny", "name": "once"}
    first, second = await asyncio.gather(
        site.client.post("/api/v1/vms", json=body, headers=headers),
        site.client.post("/api/v1/vms", json=body, headers=headers),
    )
    ids = {(await r.json())["vms"][0]["id"] for r in (first, second)}
    assert first.status == second.status == 202
    assert len(ids) == 1
    listed = await (await site.client.get("/api/v1/vms", headers=auth("alice"))).json()
    assert len(listed["vms"]) == 1
    reused = await site.client.post(
        "/api/v1/vms", json={"image": "tiny", "name": "other"}, headers=headers
    )
    assert reused.status == 409
    assert (await reused.json())["error"]["code"] == "idempotency_key_reused"


async def test_two_first_creates_with_one_key_make_the_vms_once(
    make_site: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both requests pass the early key check before either stores anything (forced):
    the second's insert meets the first's key and it answers with the first's VMs."""
    from site_agent.api.keys import VM_MANAGER

    site = await make_site()
    admission = site.client.app[VM_MANAGER].admission
    both_checked = asyncio.Barrier(2)
    earlier = admission._earlier
    checks = 0

    async def checked_together(principal: Any, key: str, digest: str) -> Any:
        nonlocal checks
        checks += 1
        found = await earlier(principal, key, digest)
        if checks <= 2:  # the two early checks; the loser's second look is not held
            assert found is None
            await both_checked.wait()
        return found

    monkeypatch.setattr(admission, "_earlier", checked_together)
    headers = {**auth("alice"), "Idempotency-Key": "raced"}
    body = {"image": "tiny", "count": 2}
    first, second = await asyncio.gather(
        site.client.post("/api/v1/vms", json=body, headers=headers),
        site.client.post("/api/v1/vms", json=body, headers=headers),
    )
    assert first.status == second.status == 202
    ids = [sorted(v["id"] for v in (await r.json())["vms"]) for r in (first, second)]
    assert ids[0] == ids[1] and len(ids[0]) == 2
    assert checks == 3  # two early checks, then the loser's look at the winner's VMs
    listed = await (await site.client.get("/api/v1/vms", headers=auth("alice"))).json()
    assert sorted(v["id"] for v in listed["vms"]) == ids[0]


async def test_vms_shared_with_a_group(make_site: Any) -> None:
    site = await make_site()
    shared = await site.create("alice", name="shared", group="physics")
    private = await site.create("alice", name="private")
    assert shared["group"] == "physics" and private["group"] is None
    carol_sees = await (await site.client.get("/api/v1/vms", headers=auth("carol"))).json()
    assert [v["id"] for v in carol_sees["vms"]] == [shared["id"]]
    bob_sees = await (await site.client.get("/api/v1/vms", headers=auth("bob"))).json()
    assert bob_sees["vms"] == []
    resp = await site.client.get(f"/api/v1/vms/{private['id']}", headers=auth("carol"))
    assert resp.status == 404
    resp = await site.client.delete(f"/api/v1/vms/{shared['id']}", headers=auth("carol"))
    assert resp.status == 200 and (await resp.json())["state"] == "done"
    refused = await site.client.post(
        "/api/v1/vms", json={"image": "tiny", "group": "chemistry"}, headers=auth("alice")
    )
    assert refused.status == 403
    assert "not a member of group 'chemistry'" in (await refused.json())["error"]["message"]
