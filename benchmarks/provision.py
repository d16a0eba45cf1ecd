#!/usr/bin/env python3
"""Provisioning latency: Stratus API create -> guest readiness line, against raw QEMU.

Both boot the same kernel, initrd, root disk overlay and cidata seed with the
same accelerator (TCG here, KVM where it works), alternating, in one run:

* ``raw``: ``qemu-system-x86_64`` started directly, timed from spawn to the
  ``STRATUS-READY`` line on its serial console;
* ``stratus``: ``POST /api/v1/vms`` to a site agent on ``qemu:///system``,
  timed from the call to ``GET /vms/{id}?wait=ready`` returning ready.

Writes p50/p95 of both and their ratio to docs/benchmarks.md.
Run: ``.venv/bin/python benchmarks/provision.py [--runs N]`` (``make bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import secrets
import shutil
import sys
import tempfile
import time
import tomllib
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp.test_utils import TestClient, TestServer

from auth.tokens import hash_token
from benchmarks.common import percentile, write_section
from site_agent.app import build_site_app
from site_agent.compute.accel import detect_local_accel
from site_agent.compute.driver import Accel
from site_agent.config import SiteConfig
from site_agent.context.cidata import ContextSeed, write_cidata_iso
from site_agent.guest.builder import GuestImage, build_guest
from site_agent.guest.site_image import DEFAULT_GUEST_DIR, guest_image_toml
from site_agent.storage.qemu_img import create_overlay


async def raw_boot(image: GuestImage, accel: Accel, workdir: Path) -> float:
    """Seconds from spawning QEMU to the readiness line."""
    vm_id = str(uuid.uuid4())
    overlay = workdir / f"{vm_id}.qcow2"
    seed = workdir / f"{vm_id}.iso"
    fmt = "raw" if image.disk.suffix in (".raw", ".img") else "qcow2"
    await create_overlay(image.disk, fmt, overlay)
    write_cidata_iso(ContextSeed(instance_id=vm_id, hostname="raw"), seed)
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "qemu-system-x86_64",
        "-accel",
        "kvm" if accel == Accel.KVM else "tcg",
        "-m",
        "256",
        "-smp",
        "1",
        "-machine",
        "pc",
        "-nographic",
        "-no-reboot",
        "-nic",
        "none",
        "-kernel",
        str(image.kernel),
        "-initrd",
        str(image.initrd),
        "-append",
        image.cmdline,
        "-drive",
        f"file={overlay},if=virtio,format=qcow2",
        "-drive",
        f"file={seed},if=virtio,format=raw,readonly=on",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=120)
            if not line:
                raise RuntimeError("raw QEMU exited before the readiness line")
            if f"STRATUS-READY {vm_id}".encode() in line:
                return time.perf_counter() - start
    finally:
        proc.kill()
        await proc.wait()
        overlay.unlink()
        seed.unlink()


async def stratus_boot(client: TestClient, headers: dict[str, str]) -> float:
    """Seconds from the create call to the API reporting the guest ready."""
    start = time.perf_counter()
    resp = await client.post(
        "/api/v1/vms", json={"image": "busybox", "vcpus": 1, "memory_mib": 256}, headers=headers
    )
    vm_id = (await resp.json())["vms"][0]["id"]
    vm = await (
        await client.get(
            f"/api/v1/vms/{vm_id}", params={"wait": "ready", "timeout": "120"}, headers=headers
        )
    ).json()
    elapsed = time.perf_counter() - start
    await client.delete(f"/api/v1/vms/{vm_id}", headers=headers)
    if not vm["ready"]:
        raise RuntimeError(f"VM {vm_id} did not become ready: {vm['state_reason']}")
    return elapsed


async def main(runs: int, guest_dir: Path) -> str:
    image = build_guest(guest_dir)
    accel = detect_local_accel()
    token = secrets.token_urlsafe(16)
    raw: list[float] = []
    api: list[float] = []
    # QEMU runs as libvirt-qemu: the state directory must be traversable (0755).
    state = Path(tempfile.mkdtemp(prefix="stratus-bench-", dir="/var/tmp"))
    state.chmod(0o755)
    try:
        config = SiteConfig.model_validate(
            tomllib.loads(f"""
[site]
state_dir = "{state / "site"}"
[[hosts]]
uri = "qemu:///system"
accel = "{"kvm" if accel == Accel.KVM else "tcg"}"
[quarantine]
period_seconds = 0
[[auth.tokens]]
token_hash = "{hash_token(token)}"
account = "bench"
{guest_image_toml(image)}""")
        )
        client = TestClient(TestServer(build_site_app(config)))
        await client.start_server()
        headers = {"Authorization": f"Bearer {token}"}
        try:
            await stratus_boot(client, headers)  # warm-up: page cache, libvirt connection
            await raw_boot(image, accel, state)
            for i in range(runs):
                raw.append(await raw_boot(image, accel, state))
                api.append(await stratus_boot(client, headers))
                print(
                    f"run {i + 1}/{runs}: raw {raw[-1]:.2f} s, stratus {api[-1]:.2f} s", flush=True
                )
        finally:
            await client.close()
    finally:
        shutil.rmtree(state, ignore_errors=True)
    p50_raw, p95_raw = percentile(raw, 50), percentile(raw, 95)
    p50_api, p95_api = percentile(api, 50), percentile(api, 95)
    return f"""## Provisioning: API create -> guest ready, vs raw QEMU

Command: `.venv/bin/python benchmarks/provision.py --runs {runs}` (also `make bench`)

Machine: {platform.node()}, accelerator `{accel.value}`, {runs} alternating runs after one warm-up
each; guest: busybox initramfs + Debian cloud kernel, 1 vCPU, 256 MiB.

| path | p50 (s) | p95 (s) |
|---|---|---|
| raw `qemu-system-x86_64` spawn -> `STRATUS-READY` | {p50_raw:.2f} | {p95_raw:.2f} |
| Stratus `POST /vms` -> `GET /vms/{{id}}?wait=ready` | {p50_api:.2f} | {p95_api:.2f} |
| ratio Stratus / raw | **{p50_api / p50_raw:.2f}** | {p95_api / p95_raw:.2f} |

Target: ratio <= 1.25 at p50.
"""


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--guest-dir", type=Path, default=DEFAULT_GUEST_DIR)
    args = parser.parse_args()
    report = asyncio.run(main(args.runs, args.guest_dir))
    print(report)
    write_section("provision", report)
