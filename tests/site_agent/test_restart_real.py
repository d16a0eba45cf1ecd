"""After ``kill -9`` of the agent while VMs run, the restarted agent loses and orphans nothing.

Real libvirtd + QEMU guests; the agent runs as a separate process
(``stratus serve site``) so it can really be killed.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from auth.tokens import hash_token
from client.sdk import StratusClient
from site_agent.guest.site_image import guest_image_toml
from tests.client.conftest import start_site
from tests.helpers import require_libvirt, require_tool
from tests.site_agent.real_site import (
    LIBVIRT_URI,
    guest,
    qemu_reachable_dir,
    stratus_domains,
)

pytestmark = pytest.mark.libvirt
TOKEN = "restart-token"


def site_toml(state: Path) -> str:
    return f"""
[site]
name = "restart"
listen_port = 0
state_dir = "{state / "site"}"
[[hosts]]
uri = "{LIBVIRT_URI}"
[vm]
ready_timeout_seconds = 60
[[auth.tokens]]
token_hash = "{hash_token(TOKEN)}"
account = "tester"
admin = true
{guest_image_toml(guest())}"""


def wait_ready(api: StratusClient, vm_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        vm = api.get_vm(vm_id, wait="ready", wait_timeout=5)
        if vm["ready"] or vm["state"] in ("done", "failed"):
            return vm
    raise AssertionError(f"VM {vm_id} not ready in time")


def test_kill_9_then_restart_keeps_every_vm(tmp_path: Path) -> None:
    require_libvirt(LIBVIRT_URI)
    require_tool("qemu-system-x86_64")
    with qemu_reachable_dir("stratus-restart-test-") as state:
        proc, url = start_site(site_toml(state), state)
        ids: list[str] = []
        try:
            with StratusClient(url, token=TOKEN) as api:
                ids = [
                    v["id"]
                    for v in api.create_vms(
                        {
                            "image": "busybox",
                            "instance_type": "t1.micro",
                            "count": 3,
                            "name": "survivor",
                        }
                    )
                ]
                for vm_id in ids:
                    assert wait_ready(api, vm_id)["ready"]
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            # The guests keep running without the agent.
            assert set(ids) <= stratus_domains()

            proc, url = start_site(site_toml(state), state)
            with StratusClient(url, token=TOKEN) as api:
                listed = {v["id"]: v for v in api.list_vms()}
                assert set(listed) == set(ids)
                assert all(listed[i]["state"] == "running" and listed[i]["ready"] for i in ids), (
                    listed
                )
                # Each VM is still fully managed: a kill frees it.
                for vm_id in ids:
                    assert api.kill_vm(vm_id)["state"] == "done"
            assert not (set(ids) & stratus_domains())
            leftover = list((state / "site" / "vms").iterdir())
            assert leftover == [], f"orphaned VM directories: {leftover}"
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            _destroy(ids)


def _destroy(ids: list[str]) -> None:
    """Last-resort cleanup so a failed assertion never leaves guests running."""
    import libvirt

    conn = libvirt.open(LIBVIRT_URI)
    try:
        for vm_id in ids:
            try:
                dom = conn.lookupByName("stratus-" + vm_id)
            except libvirt.libvirtError:
                continue
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    finally:
        conn.close()
