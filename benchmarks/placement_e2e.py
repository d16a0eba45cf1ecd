#!/usr/bin/env python3
"""End-to-end broker overhead: create -> running through the broker vs straight to the site.

One run starts a broker (HTTPS, mutual-TLS site registration) and one site
agent on ``fake://`` hosts (the hypervisor is simulated, so the times are the
services' own cost: HTTP, TLS, database, placement, the site's VM
lifecycle), as real processes on loopback, then alternates:

* ``site``: ``POST /api/v1/vms`` to the site agent, then
  ``GET /vms/{id}?wait=running`` (the site holds the answer until running);
* ``broker``: the same two calls to the broker, which places the VM (the
  :class:`~federation.placement.Placer`, one create at the site with an
  ``Idempotency-Key``) and forwards the wait to the site.

Each VM is killed after its sample (not timed).  Clients keep their
connections open (no TLS handshake per request).  Writes p50/p95 of both, and
the broker's overhead, to docs/benchmarks.md (section ``broker_e2e``).

Run: ``.venv/bin/python benchmarks/placement_e2e.py [--runs N] [--no-write]``.
The processes and the test PKI come from the broker test harness
(``tests/broker/fedenv.py``).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from benchmarks.common import percentile, write_section
from tests.broker.fedenv import (
    BROKER_SITE_TOKEN,
    Federation,
    FederationPki,
    SiteSpec,
    fake_hosts,
    tiny_image_toml,
)


def sample(api: httpx.Client, body: dict[str, object]) -> tuple[float, float, str]:
    """(seconds to 202, seconds to running, the VM id) for one create."""
    start = time.perf_counter()
    response = api.post("/vms", json=body)
    accepted = time.perf_counter() - start
    response.raise_for_status()
    vm_id = response.json()["vms"][0]["id"]
    shown = api.get(f"/vms/{vm_id}", params={"wait": "running", "timeout": 30})
    running = time.perf_counter() - start
    if shown.json()["state"] != "running":
        raise RuntimeError(f"VM {vm_id} is {shown.json()['state']}, not running")
    return accepted, running, vm_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="samples per path")
    parser.add_argument("--no-write", action="store_true", help="do not update the doc")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="stratus-bench-e2e-"))
    image = root / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
    fed = Federation(root, FederationPki.create(root / "pki"))
    times: dict[str, list[tuple[float, float]]] = {"site": [], "broker": []}
    try:
        fed.start_broker(["bench-site"], heartbeat_timeout=30.0)
        fed.start_site(SiteSpec("bench-site", fake_hosts(64), tiny_image_toml(image)))
        fed.wait_sites(["bench-site"])
        with fed.api("alice") as broker, fed.site_api("bench-site", BROKER_SITE_TOKEN) as site:
            body = {"image": "tiny", "instance_type": "t1.micro"}
            for _ in range(3):  # warm-up: connections, caches, SQLite pages
                for api, kill in ((site, site), (broker, broker)):
                    kill.delete(f"/vms/{sample(api, body)[2]}")
            for _ in range(args.runs):
                for name, api in (("site", site), ("broker", broker)):
                    accepted, running, vm_id = sample(api, body)
                    times[name].append((accepted, running))
                    api.delete(f"/vms/{vm_id}")
    finally:
        fed.close()
        subprocess.run(["rm", "-rf", str(root)], check=False)

    def ms(path: str, which: int, pct: float) -> float:
        return 1000 * percentile([t[which] for t in times[path]], pct)

    rows = []
    for label, which in (("create accepted (202)", 0), ("create -> running", 1)):
        site50, site95 = ms("site", which, 50), ms("site", which, 95)
        broker50, broker95 = ms("broker", which, 50), ms("broker", which, 95)
        rows.append(
            f"| {label} | {site50:.1f} | {site95:.1f} | {broker50:.1f} | {broker95:.1f} "
            f"| **{broker50 - site50:+.1f}** |"
        )
    header = (
        "| step | site p50 (ms) | site p95 (ms) | broker p50 (ms) | broker p95 (ms) "
        "| broker overhead p50 (ms) |"
    )
    body_md = f"""## Broker end to end: create -> running through the broker vs straight to the site

Command: `.venv/bin/python benchmarks/placement_e2e.py --runs {args.runs}`

Machine: {platform.machine()}, {args.runs} alternating samples per path after
3 warm-ups; one broker (HTTPS) and one site agent on `fake://` hosts (no
hypervisor: the services' own cost), processes on loopback, keep-alive
connections. The broker path adds: TLS to the broker, authentication,
placement, its database rows and events, the create at the site with an
`Idempotency-Key`, and forwarding the wait.

{header}
|---|---:|---:|---:|---:|---:|
{chr(10).join(rows)}
"""
    print(body_md)
    if not args.no_write:
        write_section("broker_e2e", body_md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
