"""Start-up reconciliation between the site database and the hypervisors (fake hosts).

The real-QEMU counterpart (kill -9 with running guests) is test_restart_real.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from site_agent.compute.driver import DiskSpec, DomainSpec
from tests.site_agent.conftest import auth


async def test_restart_resolves_orphans_and_vanished_domains(
    make_site: Any, tmp_path: Path
) -> None:
    first = await make_site(hosts={"fake://h": (8, 16384)})
    keep = await first.create(name="keep")
    vanish = await first.create(name="vanish")
    for vm in (keep, vanish):
        await first.wait(vm["id"])
    await first.client.close()  # the agent stops (its VMs keep running on the host)

    driver = first.drivers["fake://h"]
    del driver.domains[vanish["id"]]  # a domain that disappeared while the agent was down
    orphan_id = "11111111-2222-4333-8444-555555555555"
    await driver.connect()  # someone else defines a Stratus domain the database does not know
    await driver.start(
        DomainSpec(
            vm_id=orphan_id,
            vcpus=1,
            memory_mib=128,
            disks=(DiskSpec(path=tmp_path / "x.qcow2", target="vda"),),
        )
    )

    second = await make_site(drivers=first.drivers)
    listed = {
        v["name"]: v
        for v in (await (await second.client.get("/api/v1/vms", headers=auth("alice"))).json())[
            "vms"
        ]
    }
    assert listed["keep"]["state"] == "running" and listed["keep"]["ready"]
    assert listed["vanish"]["state"] == "failed"
    assert "vanished" in listed["vanish"]["state_reason"]
    assert orphan_id not in driver.domains  # the orphan was destroyed
    assert set(driver.domains) == {keep["id"]}
    events = (
        await (
            await second.client.get(f"/api/v1/vms/{vanish['id']}/events", headers=auth("alice"))
        ).json()
    )["events"]
    assert [e["to_state"] for e in events if e["to_state"]][-2:] == ["shutdown", "failed"]


async def test_vm_caught_mid_create_is_failed_and_cleaned(make_site: Any) -> None:
    first = await make_site(hosts={"fake://h": (8, 16384)})
    driver = first.drivers["fake://h"]
    # Simulate an agent dying during prolog: the row exists, no domain was started.
    from site_agent.api.keys import VM_MANAGER

    manager = first.client.app[VM_MANAGER]
    vm = await first.create(name="interrupted")
    await first.wait(vm["id"])
    await manager.runtime.db(manager.runtime.repo.update, vm["id"], state="prolog")
    await driver.undefine(vm["id"])
    await first.client.close()

    second = await make_site(drivers=first.drivers)
    shown = await (await second.client.get(f"/api/v1/vms/{vm['id']}", headers=auth("alice"))).json()
    assert shown["state"] == "failed"
    assert "agent restarted while the VM was being created" in shown["state_reason"]
    assert not (second.config.site.state_dir / "vms" / vm["id"]).exists()
