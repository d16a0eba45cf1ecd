"""Save as image (``POST /vms/{id}/stop`` with ``save``) on fake hosts, with real qcow2 files.

The fake guest writes nothing to its disk, so the tests write a pattern into
the VM's overlay with ``qemu-io`` and check that the saved image holds it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

from tests.site_agent.conftest import auth
from tests.site_agent.images.conftest import events, get_image, list_images, sha256

HOST = "fake://only"


def qemu_io(path: Path, command: str) -> str:
    result = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", command, str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout


def qemu_info(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(path)],
        check=True,
        capture_output=True,
    ).stdout
    info: dict[str, Any] = json.loads(out)
    return info


async def stop(site: Any, vm_id: str, body: dict[str, Any] | None, user: str = "alice") -> Any:
    return await site.client.post(f"/api/v1/vms/{vm_id}/stop", json=body, headers=auth(user))


async def wait_state(site: Any, vm_id: str, state: str, timeout: float = 15) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        resp = await site.client.get(f"/api/v1/vms/{vm_id}", headers=auth("alice"))
        vm: dict[str, Any] = await resp.json()
        if vm["state"] == state or loop.time() > deadline:
            return vm
        await asyncio.sleep(0.1)


async def stop_waits_for_the_guest(site: Any, timeout: float = 10) -> None:
    """Until the stop has pressed the power button and polls the guest's state.

    From then on it only sleeps between polls (no database call in flight), so
    the agent can be stopped "while the stop waits for the guest".
    """
    calls = site.drivers[HOST].calls
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while "shutdown" not in calls or "state" not in calls[calls.index("shutdown") :]:
        assert loop.time() < deadline, f"the stop did not reach its wait: {calls}"
        await asyncio.sleep(0.01)


def saved_disks(site: Any) -> list[Path]:
    """Cached qcow2 disks (the config image ``tiny`` is used in place, not cached)."""
    return sorted((site.config.site.state_dir / "images").glob("*/disk.qcow2"))


async def test_stop_with_save_makes_a_bootable_image(make_site: Any) -> None:
    site = await make_site(hosts={HOST: (8, 16384)})
    vm = await site.create(name="builder")
    await site.wait(vm["id"])
    root = site.config.site.state_dir / "vms" / vm["id"] / "root.qcow2"
    qemu_io(root, "write -P 0x5a 1M 64k")  # what the guest would have written

    resp = await stop(site, vm["id"], {"save": {"name": "golden", "description": "set up"}})
    assert resp.status == 202
    body = await resp.json()
    assert body["state"] == "shutdown" and "saved as image 'golden'" in body["state_reason"]
    done = await wait_state(site, vm["id"], "done")
    assert done["state"] == "done" and "root disk saved as image 'golden'" in done["state_reason"]

    image = await get_image(site, "golden")
    assert image["state"] == "ready" and image["source"] == "saved"
    assert (image["owner"], image["public"], image["url"]) == ("alice", False, None)
    assert (image["origin_vm"], image["base_image"]) == (vm["id"], "tiny")
    assert image["description"] == "set up"
    [disk] = saved_disks(site)
    data = disk.read_bytes()
    assert (image["size"], image["sha256"]) == (len(data), sha256(data))
    info = qemu_info(disk)
    assert info["format"] == "qcow2" and "backing-filename" not in info  # standalone
    assert "Pattern verification failed" not in qemu_io(disk, "read -P 0x5a 1M 64k")

    log = await events(site, vm["id"])
    assert any("saving the root disk as image 'golden'" in e for e in log)
    assert any(e.startswith("root disk saved as image 'golden'") for e in log)

    # A new VM boots from it (an overlay on the saved image); bob cannot even see it.
    again = await site.create(image="golden")
    assert (await site.wait(again["id"]))["ready"]
    overlay = site.config.site.state_dir / "vms" / again["id"] / "root.qcow2"
    assert qemu_info(overlay)["backing-filename"] == str(disk)
    assert "golden" not in {i["name"] for i in await list_images(site, "bob")}
    resp = await site.client.post("/api/v1/vms", json={"image": "golden"}, headers=auth("bob"))
    assert resp.status == 422


async def test_kill_refuses_to_drop_a_pending_save_unless_forced(make_site: Any) -> None:
    site = await make_site(hosts={HOST: (8, 16384)}, vm={"stop_timeout_seconds": 30})
    site.drivers[HOST].acpi_poweroff = False  # the stop waits: the save stays pending
    vm = await site.create()
    await site.wait(vm["id"])
    resp = await stop(site, vm["id"], {"save": {"name": "pending-one"}})
    assert resp.status == 202
    assert (await get_image(site, "pending-one"))["state"] == "saving"

    resp = await site.client.delete(f"/api/v1/vms/{vm['id']}", headers=auth("alice"))
    assert resp.status == 409
    error = (await resp.json())["error"]
    assert error["code"] == "save_pending" and "'pending-one'" in error["message"]
    assert error["details"] == {"image": "pending-one"}
    assert (await wait_state(site, vm["id"], "shutdown"))["state"] == "shutdown"
    # Neither can the image be deleted from under the stop.
    resp = await site.client.delete("/api/v1/images/pending-one", headers=auth("alice"))
    assert resp.status == 409

    resp = await site.client.delete(
        f"/api/v1/vms/{vm['id']}", params={"force": "true"}, headers=auth("alice")
    )
    assert resp.status == 200 and (await resp.json())["state"] == "done"
    log = await events(site, vm["id"])
    assert any("pending save as image 'pending-one' was dropped" in e for e in log), log
    image = await get_image(site, "pending-one")
    assert image["state"] == "failed" and "save dropped" in image["state_reason"]
    assert saved_disks(site) == []
    # The failed image is the owner's to delete (and frees the name).
    resp = await site.client.delete("/api/v1/images/pending-one", headers=auth("alice"))
    assert resp.status == 200


async def test_save_after_a_forced_power_off_says_so(make_site: Any) -> None:
    site = await make_site(hosts={HOST: (8, 16384)}, vm={"stop_timeout_seconds": 0.5})
    site.drivers[HOST].acpi_poweroff = False
    vm = await site.create()
    await site.wait(vm["id"])
    assert (await stop(site, vm["id"], {"save": {"name": "rough"}})).status == 202
    done = await wait_state(site, vm["id"], "done")
    assert "destroyed after stop timeout" in done["state_reason"]
    image = await get_image(site, "rough")
    assert image["state"] == "ready" and "powered off by force" in image["state_reason"]


async def test_a_stop_interrupted_by_an_agent_restart_still_saves(make_site: Any) -> None:
    first = await make_site(hosts={HOST: (8, 16384)}, vm={"stop_timeout_seconds": 30})
    first.drivers[HOST].acpi_poweroff = False
    vm = await first.create()
    await first.wait(vm["id"])
    assert (await stop(first, vm["id"], {"save": {"name": "survivor"}})).status == 202
    await stop_waits_for_the_guest(first)
    await first.client.close()  # the agent stops while the stop waits for the guest

    second = await make_site(drivers=first.drivers)
    done = await wait_state(second, vm["id"], "done")
    assert done["state"] == "done", done
    assert "root disk saved as image 'survivor'" in done["state_reason"]
    assert (await get_image(second, "survivor"))["state"] == "ready"


async def test_a_save_whose_vm_ended_elsewhere_is_failed_by_reconcile(make_site: Any) -> None:
    """A saving row left behind (its VM already finished) fails instead of lingering."""
    first = await make_site(hosts={HOST: (8, 16384)}, vm={"stop_timeout_seconds": 30})
    first.drivers[HOST].acpi_poweroff = False
    vm = await first.create()
    await first.wait(vm["id"])
    assert (await stop(first, vm["id"], {"save": {"name": "orphan"}})).status == 202
    await stop_waits_for_the_guest(first)
    await first.client.close()
    # While the agent is down the VM's row is finished by someone else (an operator's SQL).
    from sqlmodel import Session

    from core.db import make_engine
    from site_agent.vms.models import Vm

    engine = make_engine(first.config.database_url)
    with Session(engine) as session:
        row = session.get(Vm, vm["id"])
        assert row is not None
        row.state = "done"
        session.add(row)
        session.commit()
    engine.dispose()

    second = await make_site(drivers=first.drivers)
    image = await get_image(second, "orphan")
    assert image["state"] == "failed" and "ended before" in image["state_reason"]
