"""The broker with a site on real QEMU (libvirtd, TCG here) and a site on fake hosts.

* The busybox guest boots through the broker's API: placement on the QEMU site,
  waiting until the guest reports ready, its console and merged events through
  the broker, a clean kill; no domain is left behind.
* The acceptance test of the federation contract: through the broker, a VM with a
  named network and a persistent volume; the guest reports an address of that
  network's pool and sees the volume; at the site the VM's owner is the real user,
  made through the broker.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from site_agent.guest.site_image import guest_image_toml
from tests.broker.fedenv import Federation, SiteSpec, fake_hosts, tiny_image_toml
from tests.helpers import require_libvirt, require_tool
from tests.site_agent.real_site import LIBVIRT_URI, guest, qemu_reachable_dir, stratus_domains

pytestmark = pytest.mark.libvirt


def test_a_real_guest_through_the_broker(federation: Federation, tiny_image: Path) -> None:
    require_libvirt(LIBVIRT_URI)
    require_tool("qemu-system-x86_64")
    image = guest()
    with qemu_reachable_dir("stratus-broker-real-") as state:
        federation.start_broker(["qemu-site", "fake-site"])
        qemu_spec = SiteSpec(
            "qemu-site",
            [{"uri": LIBVIRT_URI, "cpu_overcommit": 1.0}],
            guest_image_toml(image),
        )
        federation.start_site(qemu_spec, state_dir=state)
        federation.start_site(
            SiteSpec("fake-site", fake_hosts(1), tiny_image_toml(tiny_image), price=0.5)
        )
        federation.wait_sites(["qemu-site", "fake-site"])
        made: list[str] = []
        try:
            with federation.api(timeout=180) as api:
                sites = {s["name"]: s for s in api.get("/sites").json()["sites"]}
                assert sites["qemu-site"]["cached_images"] == ["busybox"]
                assert sites["qemu-site"]["simulated"] is False
                assert sites["fake-site"]["simulated"] is True
                response = api.post(
                    "/vms",
                    json={"image": "busybox", "name": "real-via-broker", "context": {"X": "1"}},
                )
                assert response.status_code == 202, response.text
                vm = response.json()["vms"][0]
                made.append(vm["site_vm_id"])
                assert vm["site"] == "qemu-site", "only the QEMU site has the image"
                ready = api.get(f"/vms/{vm['id']}", params={"wait": "ready", "timeout": 120}).json()
                assert ready["state"] == "running" and ready["ready"] is True, ready
                console = api.get(f"/vms/{vm['id']}/console").json()["output"]
                assert f"STRATUS-READY {vm['site_vm_id']}" in console
                events = api.get(f"/vms/{vm['id']}/events").json()["events"]
                sources = {e["source"] for e in events}
                assert sources == {"broker", "qemu-site"}
                assert vm["site_vm_id"] in stratus_domains()
                killed = api.delete(f"/vms/{vm['id']}").json()
                assert killed["state"] == "done"
        finally:
            federation.close()
        assert not (stratus_domains() & set(made)), "no domain left behind"


def libvirt_networks() -> set[str]:
    import libvirt

    conn = libvirt.open(LIBVIRT_URI)
    try:
        return {n.name() for n in conn.listAllNetworks()}
    finally:
        conn.close()


@contextmanager
def removed_afterwards(network: str) -> Iterator[None]:
    """The isolated libvirt network the site makes for a pool is removed at the end."""
    import libvirt

    try:
        yield
    finally:
        conn = libvirt.open(LIBVIRT_URI)
        try:
            if network in {n.name() for n in conn.listAllNetworks()}:
                net = conn.networkLookupByName(network)
                if net.isActive():
                    net.destroy()
                net.undefine()
        finally:
            conn.close()


def test_a_named_network_and_a_volume_through_the_broker_made_as_the_user(
    federation: Federation, tiny_image: Path
) -> None:
    require_libvirt(LIBVIRT_URI)
    require_tool("qemu-system-x86_64")
    image = guest()
    network = f"stratus-brk-{uuid.uuid4().hex[:8]}"
    pools = (
        '[[networks]]\nname = "public"\ntype = "public"\ncidr = "198.18.41.0/29"\n'
        f'libvirt_network = "{network}-p"\n\n'
        '[[networks]]\nname = "lab"\ntype = "private"\ncidr = "198.18.42.0/29"\n'
        f'range_start = "198.18.42.4"\nlibvirt_network = "{network}-l"\n\n'
    )
    script = "#!/bin/sh\necho GUEST-DISKS $(ls /sys/block | tr '\\n' ' ')\n"
    with (
        qemu_reachable_dir("stratus-broker-real-") as state,
        removed_afterwards(f"{network}-p"),
        removed_afterwards(f"{network}-l"),
    ):
        federation.start_broker(["qemu-site", "fake-site"])
        # The first pool is the site's default: the VM must get the one it asked for.
        spec = SiteSpec(
            "qemu-site",
            [{"uri": LIBVIRT_URI, "cpu_overcommit": 1.0}],
            guest_image_toml(image),
            extra=pools,
        )
        federation.start_site(spec, state_dir=state)
        federation.start_site(
            SiteSpec("fake-site", fake_hosts(4), tiny_image_toml(tiny_image), price=0.5)
        )
        federation.wait_sites(["qemu-site", "fake-site"])
        made: list[str] = []
        try:
            with federation.api(timeout=180) as api:
                created = api.post("/volumes", json={"size_gib": 1, "site": "qemu-site"})
                assert created.status_code == 202, created.text
                on_qemu = created.json()
                response = api.post(
                    "/vms",
                    json={
                        "image": "busybox",
                        "network": "lab",
                        "volumes": [on_qemu["id"]],
                        "user_data": script,
                    },
                )
                assert response.status_code == 202, response.text
                vm = response.json()["vms"][0]
                made.append(vm["site_vm_id"])
                assert vm["site"] == "qemu-site"
                ready = api.get(f"/vms/{vm['id']}", params={"wait": "ready", "timeout": 150}).json()
                assert ready["state"] == "running" and ready["ready"] is True, ready
                assert ready["network"] == "lab" and ready["address"].startswith("198.18.42.")
                assert ready["ip"] == ready["address"], "the guest reports its leased address"

                # The user-data script runs after STRATUS-READY: wait for its exit line.
                deadline = time.monotonic() + 60
                done = f"STRATUS-USERDATA {vm['site_vm_id']} exit 0"
                while done not in (out := api.get(f"/vms/{vm['id']}/console").json()["output"]):
                    assert time.monotonic() < deadline, out[-2000:]
                    time.sleep(0.5)
                assert f"STRATUS-READY {vm['site_vm_id']} {ready['address']}" in out
                disks_line = next(line for line in out.splitlines() if "GUEST-DISKS" in line)
                disks = api.get(f"/vms/{vm['id']}/disks").json()["disks"]
                assert [(d["volume_id"], d["site"]) for d in disks] == [
                    (on_qemu["id"], "qemu-site")
                ]
                assert disks[0]["device"] in disks_line.split(), "the guest sees the volume"

                [there] = [
                    v for v in federation.site_vms("qemu-site") if v["id"] == vm["site_vm_id"]
                ]
                assert (there["owner"], there["via"]) == ("alice", "test-broker")
                assert api.delete(f"/vms/{vm['id']}").json()["state"] == "done"
                assert api.delete(f"/volumes/{on_qemu['id']}").status_code == 200
        finally:
            federation.close()
        assert not (stratus_domains() & set(made)), "no domain left behind"
    assert not {f"{network}-p", f"{network}-l"} & libvirt_networks(), "no network left behind"
