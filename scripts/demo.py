#!/usr/bin/env python3
"""`make demo-site`: a site agent on SQLite runs a real QEMU guest, driven by the `stratus` CLI.

(`make demo` runs the federation demo, ``scripts/demo_federation.py``.)

Steps: write a site config in a temporary state directory, start
`stratus serve site`, `stratus vm run busybox --wait ready`, show the guest's
readiness line from its console and the VM's event log, kill the VM, stop
the agent and remove everything it made.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from site_agent.guest.site_image import DEFAULT_GUEST_DIR  # noqa: E402

STRATUS = str(Path(sys.executable).parent / "stratus")


def banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def stratus(url: str, token: str, *args: str, capture: bool = False) -> str:
    cmd = [STRATUS, "--url", url, "--token", token, *args]
    print("$ stratus " + " ".join(args), flush=True)
    result = subprocess.run(cmd, check=False, text=True, capture_output=capture)
    if result.returncode != 0:
        if capture:
            sys.stderr.write(result.stderr)
        raise SystemExit(f"demo: `stratus {' '.join(args)}` failed (exit {result.returncode})")
    if capture:
        return result.stdout
    return ""


def kill_leftovers(url: str, token: str) -> None:
    """Kill every VM the demo left running (after an error part-way through)."""
    from client.errors import ClientError
    from client.sdk import StratusClient

    try:
        with StratusClient(url, token=token) as api:
            for vm in api.list_vms():
                if vm["state"] not in ("done", "failed"):
                    api.kill_vm(vm["id"])
    except ClientError as exc:
        print(f"demo: could not clean up VMs: {exc}", file=sys.stderr)


def remove_networks(state: Path) -> None:
    """Remove the libvirt networks this demo's site made (the agent keeps them on shutdown
    so that running guests keep their link; the demo leaves nothing behind)."""
    import libvirt

    try:
        suffix = "-" + (state / "site" / "instance-id").read_text().strip()[:8]
    except OSError:
        return
    conn = libvirt.open("qemu:///system")
    try:
        for net in conn.listAllNetworks():
            if net.name().startswith("stratus-") and net.name().endswith(suffix):
                if net.isActive():
                    net.destroy()
                net.undefine()
    finally:
        conn.close()


def write_config(state: Path, guest_dir: Path, token: str) -> Path:
    from auth.tokens import hash_token
    from site_agent.guest.builder import build_guest
    from site_agent.guest.site_image import guest_image_toml

    guest = build_guest(guest_dir)  # cached: a no-op when `make guest` already built it

    config = state / "site.toml"
    config.write_text(f"""
[site]
name = "demo-site"
listen_port = 0
state_dir = "{state / "site"}"

[[hosts]]
uri = "qemu:///system"

{guest_image_toml(guest)}
# An isolated network (no forwarding): the guest gets its address through the
# cidata seed and reports it in its readiness line.
[[networks]]
name = "demo-net"
type = "private"
cidr = "198.18.42.0/24"
range_start = "198.18.42.10"
range_end = "198.18.42.20"

[quarantine]
period_seconds = 60

[[auth.tokens]]
token_hash = "{hash_token(token)}"
account = "demo"
""")
    return config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--guest-dir", type=Path, default=DEFAULT_GUEST_DIR)
    args = parser.parse_args()
    guest = args.guest_dir.resolve()
    state = Path(tempfile.mkdtemp(prefix="stratus-demo-"))
    state.chmod(0o755)
    token = secrets.token_urlsafe(24)
    agent = None
    url = ""
    try:
        config = write_config(state, guest, token)
        ready = state / "url"
        banner("starting a site agent (SQLite, qemu:///system)")
        with (state / "agent.log").open("w") as log:
            agent = subprocess.Popen(
                [STRATUS, "serve", "site", "--config", str(config), "--ready-file", str(ready)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while not ready.exists():
            if agent.poll() is not None or time.monotonic() > deadline:
                sys.stderr.write((state / "agent.log").read_text())
                raise SystemExit("demo: the site agent did not start")
            time.sleep(0.1)
        url = ready.read_text().strip()
        print(f"site agent listening on {url}")

        banner("launching a VM with the stratus CLI")
        out = stratus(
            url,
            token,
            "-o",
            "json",
            "vm",
            "run",
            "busybox",
            "--name",
            "demo-vm",
            "--context",
            "GREETING=hello-from-stratus",
            "--wait",
            "ready",
            capture=True,
        )
        import json

        vm = json.loads(out)[0]
        print(f"VM {vm['id']} is {vm['state']}, ready={vm['ready']}")
        if vm["state"] != "running" or not vm["ready"]:
            raise SystemExit("demo: the VM did not become ready")

        banner("the guest's readiness line, from its serial console")
        console = stratus(url, token, "vm", "console", vm["id"], capture=True)
        lines = [line for line in console.splitlines() if "STRATUS-READY" in line]
        print(lines[-1] if lines else "(no readiness line!)")

        banner("event log")
        stratus(url, token, "vm", "events", vm["id"])

        banner("killing the VM")
        stratus(url, token, "vm", "kill", vm["id"])
        stratus(url, token, "vm", "list")
        return 0 if lines else 1
    finally:
        banner("cleaning up")
        if agent is not None and agent.poll() is None and url:
            kill_leftovers(url, token)
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=30)
        remove_networks(state)
        shutil.rmtree(state, ignore_errors=True)
        print("done: agent stopped, state directory removed")


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
