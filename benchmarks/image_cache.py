#!/usr/bin/env python3
"""Image cache: launch time from a 4 GiB vs a 40 MiB cached base, and first (uncached) launches.

Two base images of the busybox guest are made for the run and served by a
loopback HTTP server (127.0.0.1, ephemeral port):

* ``large``: a qcow2 of 4 GiB virtual size holding ~1 GiB of random data
  (16 extents of 64 MiB spread over the disk), so the file really is ~1 GiB;
* ``small``: a qcow2 of 40 MiB, filled with random data.

Both are registered through ``POST /images`` by http URL with their size and
SHA-256, with the guest's kernel and initrd (direct kernel boot). Then, on a
site agent on ``qemu:///system``:

1. **first launch** of each: ``POST /vms`` -> ``GET /vms/{id}?wait=ready``,
   which includes the download from the loopback server, the size and
   checksum verification and the move into the cache;
2. **cached launches**, alternating large and small, same measurement: each
   VM boots from a qcow2 overlay on the cached base.

Writes p50/p95 and the large/small ratio (target <= 1.1) to docs/benchmarks.md,
section ``image_cache``; every file made is deleted at the end.
Run: ``.venv/bin/python benchmarks/image_cache.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from auth.tokens import hash_token
from benchmarks.common import percentile, write_section
from site_agent.app import build_site_app
from site_agent.compute.accel import detect_local_accel
from site_agent.compute.driver import Accel
from site_agent.config import SiteConfig
from site_agent.guest.builder import GuestImage, build_guest
from site_agent.guest.site_image import DEFAULT_GUEST_DIR

MIB = 1024 * 1024
GIB = 1024 * MIB


def make_large(workdir: Path) -> Path:
    """A 4 GiB-virtual qcow2 with 1 GiB of random data in 16 extents of 64 MiB."""
    raw = workdir / "large.raw"
    with raw.open("wb") as out:
        out.truncate(4 * GIB)
        for extent in range(16):
            out.seek(extent * 256 * MIB)
            for _ in range(64):
                out.write(os.urandom(MIB))
    qcow2 = workdir / "large.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], check=True
    )
    raw.unlink()
    return qcow2


def make_small(workdir: Path) -> Path:
    """A 40 MiB qcow2 filled with random data."""
    raw = workdir / "small.raw"
    raw.write_bytes(os.urandom(40 * MIB))
    qcow2 = workdir / "small.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], check=True
    )
    raw.unlink()
    return qcow2


def file_source(url: str, path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(MIB):
            digest.update(chunk)
    return {"url": url, "size": path.stat().st_size, "sha256": digest.hexdigest()}


async def serve_files(files: dict[str, Path]) -> web.AppRunner:
    async def handle(request: web.Request) -> web.StreamResponse:
        path = files.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/{name}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


async def launch(client: TestClient, headers: dict[str, str], image: str) -> float:
    """Seconds from the create call to the API reporting the guest ready; the VM is killed."""
    start = time.perf_counter()
    resp = await client.post(
        "/api/v1/vms", json={"image": image, "vcpus": 1, "memory_mib": 256}, headers=headers
    )
    body = await resp.json()
    if resp.status != 202:
        raise RuntimeError(f"create failed: {body}")
    vm_id = body["vms"][0]["id"]
    vm = await (
        await client.get(
            f"/api/v1/vms/{vm_id}", params={"wait": "ready", "timeout": "300"}, headers=headers
        )
    ).json()
    elapsed = time.perf_counter() - start
    await client.delete(f"/api/v1/vms/{vm_id}", headers=headers)
    if not vm["ready"]:
        raise RuntimeError(f"VM {vm_id} on {image} did not become ready: {vm['state_reason']}")
    return elapsed


async def main(runs: int, guest_dir: Path) -> str:
    guest: GuestImage = build_guest(guest_dir)
    accel = detect_local_accel()
    token = secrets.token_urlsafe(16)
    headers = {"Authorization": f"Bearer {token}"}
    # QEMU runs as libvirt-qemu: the state directory must be traversable (0755).
    workdir = Path(tempfile.mkdtemp(prefix="stratus-bench-images-", dir="/var/tmp"))
    workdir.chmod(0o755)
    runner: web.AppRunner | None = None
    try:
        t0 = time.perf_counter()
        bases = {"large": make_large(workdir), "small": make_small(workdir)}
        print(f"base images made in {time.perf_counter() - t0:.1f} s", flush=True)
        files = {p.name: p for p in bases.values()}
        files.update(vmlinuz=guest.kernel, initrd=guest.initrd)
        runner = await serve_files(files)
        port = runner.addresses[0][1]
        base_url = f"http://127.0.0.1:{port}"
        config = SiteConfig.model_validate(
            tomllib.loads(f"""
[site]
state_dir = "{workdir / "site"}"
[[hosts]]
uri = "qemu:///system"
accel = "{"kvm" if accel == Accel.KVM else "tcg"}"
[vm]
ready_timeout_seconds = 300
[quarantine]
period_seconds = 0
sweep_interval_seconds = 5
[image_cache]
max_bytes = {8 * GIB}
[[auth.tokens]]
token_hash = "{hash_token(token)}"
account = "bench"
admin = true
""")
        )
        kernel = file_source(f"{base_url}/vmlinuz", guest.kernel)
        initrd = file_source(f"{base_url}/initrd", guest.initrd)
        sizes: dict[str, int] = {}
        client = TestClient(TestServer(build_site_app(config)))
        await client.start_server()
        first: dict[str, float] = {}
        cached: dict[str, list[float]] = {"large": [], "small": []}
        try:
            for name, path in bases.items():
                disk = file_source(f"{base_url}/{path.name}", path)
                sizes[name] = disk["size"]
                body = {
                    "name": f"bench-{name}",
                    **disk,
                    "format": "qcow2",
                    "kernel": kernel,
                    "initrd": initrd,
                    "cmdline": guest.cmdline,
                }
                resp = await client.post("/api/v1/images", json=body, headers=headers)
                if resp.status != 201:
                    raise RuntimeError(f"register failed: {await resp.text()}")
            for name in ("small", "large"):
                first[name] = await launch(client, headers, f"bench-{name}")
                print(f"first launch of {name}: {first[name]:.2f} s", flush=True)
            for i in range(runs):
                for name in ("large", "small"):
                    cached[name].append(await launch(client, headers, f"bench-{name}"))
                print(
                    f"run {i + 1}/{runs}: large {cached['large'][-1]:.2f} s,"
                    f" small {cached['small'][-1]:.2f} s",
                    flush=True,
                )
            listing = (await (await client.get("/api/v1/images", headers=headers)).json())["images"]
            in_cache = {
                i["name"].removeprefix("bench-"): i["cached_bytes"]
                for i in listing
                if i["name"].startswith("bench-")
            }
        finally:
            await client.close()
    finally:
        if runner is not None:
            await runner.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    p50 = {n: percentile(v, 50) for n, v in cached.items()}
    p95 = {n: percentile(v, 95) for n, v in cached.items()}
    ratio = p50["large"] / p50["small"]
    labels = {
        "large": "large: qcow2, 4 GiB virtual, ~1 GiB random data",
        "small": "small: qcow2, 40 MiB random data",
    }
    rows = "\n".join(
        f"| {labels[n]} | {sizes[n] / MIB:.0f} | {first[n]:.2f} | {p50[n]:.2f} | {p95[n]:.2f} |"
        for n in ("large", "small")
    )
    held = ", ".join(f"{n} {in_cache.get(n, 0) / MIB:.0f} MiB" for n in ("large", "small"))
    return f"""## Image cache: launch time vs base image size, first vs cached launch

Command: `.venv/bin/python benchmarks/image_cache.py --runs {runs}`

Machine: {platform.node()}, accelerator `{accel.value}`; guest: busybox initramfs + Debian
cloud kernel by direct kernel boot, 1 vCPU, 256 MiB. Both bases are registered by http URL
(loopback server) with size and SHA-256, and kernel/initrd; each VM boots from a qcow2
overlay on the cached base. Launch = `POST /vms` -> `GET /vms/{{id}}?wait=ready`.

| base image | file (MiB) | first launch, uncached (s) | cached p50 (s) | cached p95 (s) |
|---|---|---|---|---|
{rows}

Cached launch ratio large / small at p50: **{ratio:.2f}** (target <= 1.1), {runs} alternating
runs each. The first launch includes the download from the loopback server, the size,
SHA-1 and SHA-256 computation and check, and the qcow2 structure check; cached bytes
after the run (disk + kernel + initrd): {held}.

Note: this guest runs from its initramfs and reads little of its root disk while
booting, so the measurement isolates what the site does per launch (overlay, seed,
domain); a guest that reads its disk reads the same blocks whatever the base's size.
"""


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--guest-dir", type=Path, default=DEFAULT_GUEST_DIR)
    args = parser.parse_args()
    report = asyncio.run(main(args.runs, args.guest_dir))
    print(report)
    write_section("image_cache", report)
