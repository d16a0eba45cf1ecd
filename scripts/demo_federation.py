#!/usr/bin/env python3
"""The federation demo: a broker, two sites and a public cloud, driven by the `stratus` CLI.

Everything runs on loopback:

* a throwaway CA (made here with ``cryptography``) signs the broker's HTTPS
  certificate and the two sites' certificates (sites register over mutual TLS);
* the broker (``stratus serve broker``) with both sites trusted,
  ``moto_server`` configured as public cloud ``moto-ec2`` for bursting;
* site ``qemu-site`` on ``qemu:///system`` running the busybox guest for real
  (2 vCPUs), site ``small-site`` on ``fake://`` hosts (1 vCPU): a *simulated*
  site, whose VMs run nothing; it is labelled so wherever it appears (the
  site list, the VM tables, the summary), as ``GET /sites`` reports it;
* ``stratus vm run`` until both sites are full, then once more: that VM
  bursts to the cloud; ``stratus vm list`` shows where each runs; every VM is
  killed; a summary table is printed.

moto's instance addresses are made up: nothing connects to them.  Every
process, VM, directory and the moto server are removed at the end, also after
an error or Ctrl-C.  Run: ``.venv/bin/python scripts/demo_federation.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
STRATUS = str(BIN / "stratus")
MOTO_AMI = "ami-03cf127a"  # moto accepts any AMI id


def banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- a throwaway CA ------------------------------------------------------------------


@dataclass
class Pki:
    root: Path
    ca_cert: Path = field(init=False)
    ca_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        from OpenSSL import crypto

        self._x509, self._hashes, self._ser, self._ec = x509, hashes, serialization, ec
        self.root.mkdir(parents=True)
        now = dt.datetime.now(dt.UTC)
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "org"),
                x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "stratus-demo"),
                x509.NameAttribute(NameOID.COMMON_NAME, "Stratus Demo CA"),
            ]
        )
        self._name = name
        self._ca = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self.ca_cert = self.root / "ca.pem"
        self.ca_cert.write_bytes(self._ca.public_bytes(serialization.Encoding.PEM))
        crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(name)
            .last_update(now - dt.timedelta(hours=1))
            .next_update(now + dt.timedelta(days=2))
            .sign(self._key, hashes.SHA256())
        )
        digest = f"{crypto.X509.from_cryptography(self._ca).subject_name_hash():08x}"
        self.ca_dir = self.root / "certificates"
        self.ca_dir.mkdir()
        (self.ca_dir / f"{digest}.0").write_bytes(self.ca_cert.read_bytes())
        (self.ca_dir / f"{digest}.r0").write_bytes(crl.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, cn: str, *, server: bool = False) -> tuple[Path, Path, str]:
        """A certificate and key for ``cn``; returns (cert, key, grid DN)."""
        x509, hashes, ser = self._x509, self._hashes, self._ser
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = self._ec.generate_private_key(self._ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "org"),
                x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "stratus-demo"),
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
            ]
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), False
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        cert = builder.sign(self._key, hashes.SHA256())
        cert_path, key_path = self.root / f"{name}.pem", self.root / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(ser.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
        )
        key_path.chmod(0o600)
        return cert_path, key_path, self.dn(cn)

    @staticmethod
    def dn(cn: str) -> str:
        """The grid DN of the certificate :meth:`issue` makes for ``cn``."""
        return f"/DC=org/DC=stratus-demo/CN={cn}"


# --- processes -----------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


class Demo:
    def __init__(self, work: Path, site_state: Path, guest_dir: Path) -> None:
        self.work = work
        self.site_state = site_state
        self.guest_dir = guest_dir
        self.procs: list[Proc] = []
        self.token = secrets.token_urlsafe(18)
        self.site_token = secrets.token_urlsafe(18)
        self.broker_url = ""
        self.env = dict(os.environ)
        self.simulated: set[str] = set()  # sites on fake:// hosts (GET /sites says so)

    def where(self, site: str | None) -> str:
        """A site's name as the demo shows it: a simulated site is labelled so."""
        if site is None:
            return "-"
        return f"{site} (simulated)" if site in self.simulated else site

    def start(self, name: str, command: list[str], ready: Path | None = None) -> Proc:
        log = self.work / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        if ready is not None:
            deadline = time.monotonic() + 90
            while not ready.exists() or not ready.read_text().strip():
                if popen.poll() is not None or time.monotonic() > deadline:
                    sys.stderr.write(log.read_text(errors="replace")[-3000:])
                    raise SystemExit(f"demo: {name} did not start (log: {log})")
                time.sleep(0.1)
        return proc

    def stratus(self, *args: str, capture: bool = False) -> str:
        """Run the `stratus` CLI against the broker, showing the command."""
        print("$ stratus " + " ".join(args), flush=True)
        result = subprocess.run(
            [STRATUS, "--url", self.broker_url, "--token", self.token, *args],
            env=self.env,
            text=True,
            capture_output=capture,
            check=False,
        )
        if result.returncode != 0:
            if capture:
                sys.stderr.write(result.stderr)
            raise SystemExit(f"demo: `stratus {' '.join(args)}` failed ({result.returncode})")
        return result.stdout if capture else ""

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
                try:
                    proc.popen.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.popen.kill()
                    proc.popen.wait(timeout=10)


def site_toml(
    name: str, port: int, state: Path, hosts: str, image: str, pki: Pki, broker_url: str,
    site_token_hash: str, price: float, country: str,
) -> str:  # fmt: skip
    cert, key, _ = pki.issue(name, f"{name}.demo.test")
    return f"""
[site]
name = "{name}"
listen_port = {port}
state_dir = "{state}"

{hosts}
{image}
[vm]
stop_timeout_seconds = 10
ready_timeout_seconds = 120

[quarantine]
period_seconds = 0

[[auth.tokens]]
token_hash = "{site_token_hash}"
account = "broker"
admin = true

[federation]
broker_url = "{broker_url}"
site_cert = "{cert}"
site_key = "{key}"
ca = "{pki.ca_cert}"
public_url = "http://127.0.0.1:{port}"
interval_seconds = 1
price_per_hour = {price}
location = {{ country = "{country}" }}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    from site_agent.guest.site_image import DEFAULT_GUEST_DIR

    parser.add_argument("--guest-dir", type=Path, default=DEFAULT_GUEST_DIR)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="stratus-fed-demo-"))
    site_state = Path(tempfile.mkdtemp(prefix="stratus-fed-demo-site-", dir="/var/tmp"))
    site_state.chmod(0o755)
    demo = Demo(work, site_state, args.guest_dir.resolve())
    summary: list[dict[str, Any]] = []
    try:
        run(demo, summary)
        print_summary(demo, summary)
        return 0
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130
    finally:
        banner("cleaning up")
        kill_leftovers(demo)
        demo.stop_all()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(site_state, ignore_errors=True)
        print("done: every VM killed, broker, sites and moto stopped, directories removed")


def run(demo: Demo, summary: list[dict[str, Any]]) -> None:
    from auth.tokens import hash_token
    from site_agent.guest.builder import build_guest
    from site_agent.guest.site_image import guest_image_toml

    banner("building (or reusing) the busybox guest and a throwaway CA")
    guest = build_guest(demo.guest_dir)
    pki = Pki(demo.work / "pki")
    broker_cert, broker_key, _ = pki.issue("broker", "127.0.0.1", server=True)
    demo.env["STRATUS_CA"] = str(pki.ca_cert)
    demo.env["STRATUS_CONFIG"] = str(demo.work / "no-client-config.toml")

    banner("starting moto_server (EC2 API) on loopback as public cloud 'moto-ec2'")
    moto_port = free_port()
    moto = (
        str(BIN / "moto_server") if (BIN / "moto_server").exists() else shutil.which("moto_server")
    )
    if moto is None:
        raise SystemExit("demo: moto_server not found (pip install 'moto[server]')")
    demo.start("moto", [moto, "-H", "127.0.0.1", "-p", str(moto_port)])
    wait_http(f"http://127.0.0.1:{moto_port}/moto-api/data.json")

    banner("starting the broker (HTTPS, sites register over mutual TLS)")
    broker_port = free_port()
    demo.broker_url = f"https://127.0.0.1:{broker_port}"
    qemu_dn, small_dn = Pki.dn("qemu-site.demo.test"), Pki.dn("small-site.demo.test")
    broker_config = demo.work / "broker.toml"
    broker_config.write_text(f"""
[broker]
name = "demo-broker"
listen_port = {broker_port}
state_dir = "{demo.work / "broker"}"
heartbeat_timeout_seconds = 10
monitor_interval_seconds = 1

[tls]
cert = "{broker_cert}"
key = "{broker_key}"
ca_dir = "{pki.ca_dir}"

[[trusted_sites]]
name = "qemu-site"
dn = "{qemu_dn}"
token = "{demo.site_token}"

[[trusted_sites]]
name = "small-site"
dn = "{small_dn}"
token = "{demo.site_token}"

[[clouds]]
name = "moto-ec2"
driver = "ec2"
key = "AKIDDEMO"
secret = "demo"
host = "127.0.0.1"
port = {moto_port}
secure = false
images = {{ busybox = "{MOTO_AMI}" }}

[clouds.sizes."t1.micro"]
size_id = "t2.nano"
vcpus = 1
memory_mib = 512
price_per_hour = 0.0058

[bursting]
allowed_users = ["demo"]
budget_per_period = 1.0

[[auth.tokens]]
token_hash = "{hash_token(demo.token)}"
account = "demo"
""")
    ready = demo.work / "broker.url"
    demo.start(
        "broker",
        [STRATUS, "serve", "broker", "--config", str(broker_config),
         "--ready-file", str(ready)],
        ready,
    )  # fmt: skip
    print(f"broker listening on {demo.broker_url}")

    banner("starting two site agents: qemu-site (real QEMU, 2 vCPUs), small-site (fake, 1 vCPU)")
    site_hash = hash_token(demo.site_token)
    for name, hosts, state, price, country in (
        ("qemu-site", '[[hosts]]\nuri = "qemu:///system"\ncpu_overcommit = 1.0\n',
         demo.site_state, 0.0, "FR"),
        ("small-site", '[[hosts]]\nuri = "fake://small-1"\ncpu_overcommit = 0.125\n'
         "reserved_memory_mib = 0\n", demo.work / "small-site", 0.01, "DE"),
    ):  # fmt: skip
        port = free_port()
        config = demo.work / f"{name}.toml"
        config.write_text(
            site_toml(
                name, port, state, hosts, guest_image_toml(guest), pki, demo.broker_url,
                site_hash, price, country,
            )
        )  # fmt: skip
        url_file = demo.work / f"{name}.url"
        demo.start(
            name,
            [STRATUS, "serve", "site", "--config", str(config),
             "--ready-file", str(url_file)],
            url_file,
        )  # fmt: skip
    wait_sites(demo, ["qemu-site", "small-site"])
    demo.stratus("site", "list")
    sites = json.loads(demo.stratus("-o", "json", "site", "list", capture=True))
    demo.simulated = {s["name"] for s in sites if s["simulated"]}
    for name in sorted(demo.simulated):
        print(f"({name} runs on simulated hosts (fake://): its VMs are simulated and run nothing)")

    banner("running t1.micro VMs until the sites are full; the next one bursts to the cloud")
    for index in range(1, 6):
        started = time.monotonic()
        out = demo.stratus(
            "-o", "json", "vm", "run", "busybox", "--type", "t1.micro",
            "--name", f"demo-{index}", "--wait", "running", "--timeout", "180",
            capture=True,
        )  # fmt: skip
        vm = json.loads(out)[0]
        vm["seconds_to_running"] = round(time.monotonic() - started, 1)
        summary.append(vm)
        print(f"  demo-{index}: {vm['state']} on {demo.where(vm['site'])} ({vm['kind']})")
        if vm["kind"] == "cloud":
            break
    else:
        raise SystemExit("demo: no VM burst to the cloud although the sites should be full")

    banner("where everything runs (SITE column; a simulated site's VMs run nothing)")
    listed = json.loads(demo.stratus("-o", "json", "vm", "list", capture=True))
    print_table(
        ("id", "name", "state", "site", "kind"),
        [(v["id"], v["name"], v["state"], demo.where(v["site"]), v["kind"]) for v in listed],
    )
    qemu_vm = next(v for v in summary if v["site"] == "qemu-site")
    banner(f"a real guest on qemu-site: waiting for {qemu_vm['name']}'s readiness line")
    out = demo.stratus("-o", "json", "vm", "show", qemu_vm["id"], capture=True)
    deadline = time.monotonic() + 120
    while not json.loads(out)["ready"] and time.monotonic() < deadline:
        time.sleep(1)
        out = demo.stratus("-o", "json", "vm", "show", qemu_vm["id"], capture=True)
    console = demo.stratus("vm", "console", qemu_vm["id"], capture=True)
    lines = [line for line in console.splitlines() if "STRATUS-READY" in line]
    print(lines[-1] if lines else "(no readiness line yet)")
    # The guest knows its site's id for it; the broker's id is federation-wide.
    site_vm_id = json.loads(out)["site_vm_id"]
    print(f"(broker id {qemu_vm['id']} is VM {site_vm_id} at qemu-site, the id the guest prints)")
    if not lines or site_vm_id not in lines[-1]:
        raise SystemExit("demo: the real guest did not print its readiness line")
    demo.stratus("vm", "events", summary[-1]["id"])

    banner("killing every VM")
    killed = json.loads(
        demo.stratus("-o", "json", "vm", "kill", *[v["id"] for v in summary], capture=True)
    )
    print_table(
        ("id", "name", "state", "site"),
        [(v["id"], v["name"], v["state"], demo.where(v["site"])) for v in killed],
    )
    final = json.loads(demo.stratus("-o", "json", "vm", "list", capture=True))
    states = {v["id"]: v["state"] for v in final}
    for vm in summary:
        vm["final_state"] = states.get(vm["id"], "?")


def wait_http(url: str) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                response.read()
                return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise SystemExit(f"demo: {url} did not answer") from None
            time.sleep(0.2)


def wait_sites(demo: Demo, names: list[str]) -> None:
    deadline = time.monotonic() + 60
    while True:
        out = subprocess.run(
            [STRATUS, "--url", demo.broker_url, "--token", demo.token, "-o", "json",
             "site", "list"],
            env=demo.env, text=True, capture_output=True, check=False,
        )  # fmt: skip
        if out.returncode == 0:
            status = {s["name"]: s["status"] for s in json.loads(out.stdout)}
            if all(status.get(n) == "available" for n in names):
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: sites did not register: {out.stdout or out.stderr}")
        time.sleep(0.5)


def kill_leftovers(demo: Demo) -> None:
    """Kill, through the broker, every VM the demo made that is not done (after an error)."""
    if not demo.broker_url:
        return
    from client.errors import ClientError
    from client.sdk import StratusClient

    try:
        with StratusClient(demo.broker_url, token=demo.token, ca=demo.env.get("STRATUS_CA")) as api:
            for vm in api.list_vms():
                if vm["state"] not in ("done", "failed", "expired"):
                    api.kill_vm(vm["id"], force=True)
    except ClientError as exc:
        print(f"demo: could not clean up VMs through the broker: {exc}", file=sys.stderr)


def print_table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    widths = [max(len(h), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.upper().ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def print_summary(demo: Demo, summary: list[dict[str, Any]]) -> None:
    banner("summary")
    print_table(
        ("vm", "site", "kind", "to running (s)", "final state"),
        [
            (v["name"], demo.where(v["site"]), v["kind"], f"{v['seconds_to_running']:.1f}",
             v["final_state"])
            for v in summary
        ],
    )  # fmt: skip
    if demo.simulated:
        print(f"(simulated: {', '.join(sorted(demo.simulated))} runs nothing; its VMs only count)")


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
