"""The broker with a site on real QEMU (libvirtd, TCG here) and a site on fake hosts.

The busybox guest boots through the broker's API: placement on the QEMU site,
waiting until the guest reports ready, its console and merged events through
the broker, a clean kill; no domain is left behind.
"""

from __future__ import annotations

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
