"""A federation on loopback for tests: a broker process, site agent processes, a test PKI.

* :class:`FederationPki` makes a CA (with its CRL in an IGTF-style directory),
  the broker's HTTPS certificate for 127.0.0.1, and site certificates.
* :class:`Federation` writes configs and starts ``stratus serve broker`` and
  ``stratus serve site`` (the site agents send heartbeats to the broker)
  as real processes, so a test can kill one (``SIGKILL``), freeze it
  (``SIGSTOP``) or restart it on the same state.  Users talk to the broker
  over HTTPS with static tokens; the broker acts at the sites as those users
  (delegation signed with its certificate, which the sites trust through
  ``[federation] ca`` and the host of ``broker_url``), and as itself with its
  ``broker`` token for its background work.

Every process is stopped by :meth:`Federation.close`; sites on fake hosts
run nothing, sites on ``qemu:///system`` have their VMs killed first.
Only 127.0.0.1 is used.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from auth.tokens import hash_token
from tests.auth.pki import Cred, Pki
from tests.helpers import free_port

USERS = {
    "alice": "alice-broker-token-0001",  # may burst (bursting.allowed_users)
    "bob": "bob-broker-token-000002",  # may not burst
    "root": "root-broker-token-00003",  # broker admin
    "dave": "dave-broker-token-000004",  # in group atlas
    "erin": "erin-broker-token-000005",  # in group atlas
}
GROUPS = {"dave": ["atlas"], "erin": ["atlas"]}  # groups of the users' broker tokens
BROKER_SITE_TOKEN = "broker-at-site-token-0001"  # the broker's account at every site
SITE_ADMIN_TOKEN = "site-local-admin-token-01"  # a local admin at every site (tests only)
STRATUS = str(Path(sys.executable).parent / "stratus")


def site_dn(name: str) -> str:
    return f"/DC=org/DC=stratus-test/OU=Sites/CN={name}.sites.test"


@dataclass
class FederationPki:
    """The federation's CA, its CA directory, the broker and site certificates."""

    pki: Pki
    ca: Cred
    ca_dir: Path
    broker: Cred
    sites: dict[str, Cred] = field(default_factory=dict)
    other_ca: Cred | None = None

    @classmethod
    def create(cls, root: Path) -> FederationPki:
        pki = Pki(root)
        ca = pki.ca("fedca", "/DC=org/DC=stratus-test/CN=Federation Test CA")
        broker = pki.issue(
            ca, "broker", "/DC=org/DC=stratus-test/CN=127.0.0.1", server_ip="127.0.0.1"
        )
        ca_dir = pki.ca_dir("federation", [ca], {"fedca": pki.crl(ca)})
        return cls(pki=pki, ca=ca, ca_dir=ca_dir, broker=broker)

    def site(self, name: str) -> Cred:
        """The certificate of site ``name`` (made on first use)."""
        if name not in self.sites:
            self.sites[name] = self.pki.issue(self.ca, f"site-{name}", site_dn(name))
        return self.sites[name]

    def foreign(self, name: str) -> Cred:
        """A certificate with site ``name``'s DN from a CA the broker does not trust."""
        if self.other_ca is None:
            self.other_ca = self.pki.ca("rogueca", "/DC=org/DC=rogue/CN=Rogue CA")
        return self.pki.issue(self.other_ca, f"foreign-{name}", site_dn(name))

    def client_context(self, cred: Cred | None = None) -> ssl.SSLContext:
        """A client context trusting the federation CA, presenting ``cred`` if given."""
        context = ssl.create_default_context(cafile=str(self.ca.cert_path))
        if cred is not None:
            context.load_cert_chain(str(cred.cert_path), str(cred.key_path))
        return context


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    url: str
    workdir: Path
    command: list[str]

    @property
    def log(self) -> str:
        path = self.workdir / "process.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None


def start_process(name: str, command: list[str], workdir: Path, timeout: float = 60) -> Process:
    """Start ``command`` (which writes its URL to ``workdir/url``) and wait until it listens."""
    ready = workdir / "url"
    ready.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with (workdir / "process.log").open("ab") as log:
        popen = subprocess.Popen(
            [*command, "--ready-file", str(ready)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
    deadline = time.monotonic() + timeout
    while not ready.exists() or not ready.read_text().strip():
        if popen.poll() is not None or time.monotonic() > deadline:
            popen.kill()
            popen.wait(timeout=10)
            text = (workdir / "process.log").read_text(errors="replace")
            raise RuntimeError(f"{name} did not start:\n{text[-4000:]}")
        time.sleep(0.05)
    return Process(name, popen, ready.read_text().strip(), workdir, command)


@dataclass
class SiteSpec:
    """A site agent of the test federation."""

    name: str
    hosts: list[dict[str, Any]]
    images: str  # [[images]] TOML
    price: float = 0.0
    location: dict[str, str] = field(default_factory=dict)
    port: int = 0
    public_url: str | None = None  # what the site tells the broker (default: its own URL)
    extra: str = ""


class Federation:
    """Processes of one test federation (see the module docstring)."""

    def __init__(self, root: Path, pki: FederationPki) -> None:
        self.root = root
        self.pki = pki
        self.broker: Process | None = None
        self.broker_config: Path | None = None
        self.sites: dict[str, Process] = {}
        self.specs: dict[str, SiteSpec] = {}
        self.trusted: list[str] = []
        self.broker_port = free_port()  # fixed, so that a restarted broker keeps its URL

    # --- broker -------------------------------------------------------------------

    def broker_toml(
        self,
        trusted: list[str],
        *,
        heartbeat_timeout: float = 3.0,
        database_url: str | None = None,
        extra: str = "",
        tls: bool = True,
        retry_attempts: int = 3,
    ) -> str:
        state = self.root / "broker-state"
        db = f'database_url = "{database_url}"\n' if database_url else ""
        users = "".join(
            f'[[auth.tokens]]\ntoken_hash = "{hash_token(token)}"\naccount = "{user}"\n'
            f"admin = {'true' if user == 'root' else 'false'}\n"
            f"groups = {_toml(GROUPS.get(user, []))}\n\n"
            for user, token in USERS.items()
        )
        sites = "".join(
            f'[[trusted_sites]]\nname = "{name}"\ndn = "{site_dn(name)}"\n'
            f'token = "{BROKER_SITE_TOKEN}"\n\n'
            for name in trusted
        )
        tls_section = (
            f'[tls]\ncert = "{self.pki.broker.cert_path}"\nkey = "{self.pki.broker.key_path}"\n'
            f'ca_dir = "{self.pki.ca_dir}"\n\n'
            if tls
            else ""
        )
        return f"""
[broker]
name = "test-broker"
listen_port = {self.broker_port}
state_dir = "{state}"
{db}heartbeat_timeout_seconds = {heartbeat_timeout}
monitor_interval_seconds = 0.3
site_timeout_seconds = 5
list_timeout_seconds = 3
attempt_timeout_seconds = 30
orphan_grace_seconds = 2
orphan_sweep_interval_seconds = 1

[broker.retry]
attempts = {retry_attempts}
initial_wait_seconds = 0.05
max_wait_seconds = 0.5

{tls_section}{sites}{users}{extra}
"""

    def start_broker(self, trusted: list[str], **options: Any) -> Process:
        self.trusted = trusted
        workdir = self.root / "broker"
        workdir.mkdir(exist_ok=True)
        config = workdir / "broker.toml"
        config.write_text(self.broker_toml(trusted, **options))
        self.broker_config = config
        command = [STRATUS, "serve", "broker", "--config", str(config)]
        self.broker = start_process("broker", command, workdir)
        return self.broker

    def restart_broker(self) -> Process:
        assert self.broker is not None
        self.stop(self.broker)
        self.broker = start_process("broker", self.broker.command, self.broker.workdir)
        return self.broker

    @property
    def url(self) -> str:
        assert self.broker is not None
        return self.broker.url

    def api(self, user: str = "alice", timeout: float = 30.0) -> httpx.Client:
        """An HTTPS client for the broker's API as ``user``."""
        return httpx.Client(
            base_url=self.url + "/api/v1",
            headers={"Authorization": f"Bearer {USERS[user]}"},
            verify=self.pki.client_context(),
            timeout=timeout,
        )

    # --- sites ----------------------------------------------------------------------

    def site_toml(self, spec: SiteSpec, state: Path) -> str:
        cert = self.pki.site(spec.name)
        hosts = "".join(
            "[[hosts]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in host.items()) + "\n"
            for host in spec.hosts
        )
        location = ", ".join(f'{k} = "{v}"' for k, v in spec.location.items())
        public_url = spec.public_url or f"http://127.0.0.1:{spec.port}"
        return f"""
[site]
name = "{spec.name}"
listen_port = {spec.port}
state_dir = "{state}"

{hosts}{spec.images}
[vm]
stop_timeout_seconds = 5
monitor_interval_seconds = 1

[quarantine]
period_seconds = 0

[[auth.tokens]]
token_hash = "{hash_token(BROKER_SITE_TOKEN)}"
account = "broker"
admin = true

[[auth.tokens]]
token_hash = "{hash_token(SITE_ADMIN_TOKEN)}"
account = "siteadmin"
admin = true

{spec.extra}
[federation]
broker_url = "{self.url}"
site_cert = "{cert.cert_path}"
site_key = "{cert.key_path}"
ca = "{self.pki.ca.cert_path}"
public_url = "{public_url}"
interval_seconds = 0.3
timeout_seconds = 3
price_per_hour = {spec.price}
location = {{ {location} }}
"""

    def start_site(self, spec: SiteSpec, *, state_dir: Path | None = None) -> Process:
        """Start (or restart, same state and port) the site agent of ``spec``."""
        if not spec.port:
            spec.port = free_port()
        self.specs[spec.name] = spec
        workdir = self.root / f"site-{spec.name}"
        workdir.mkdir(exist_ok=True)
        state = state_dir or workdir / "state"
        config = workdir / "site.toml"
        config.write_text(self.site_toml(spec, state))
        command = [STRATUS, "serve", "site", "--config", str(config)]
        process = start_process(f"site {spec.name}", command, workdir)
        self.sites[spec.name] = process
        return process

    def site_api(self, name: str, token: str = BROKER_SITE_TOKEN) -> httpx.Client:
        """A client for a site's own API (to check what really exists there)."""
        return httpx.Client(
            base_url=self.sites[name].url + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    def site_vms(self, name: str) -> list[dict[str, Any]]:
        """Every VM at the site (all owners), as the site itself lists them."""
        with self.site_api(name, SITE_ADMIN_TOKEN) as api:
            response = api.get("/vms", params={"all": "true"})
            response.raise_for_status()
            vms: list[dict[str, Any]] = response.json()["vms"]
            return vms

    def wait_sites(self, names: list[str], status: str = "available", timeout: float = 30) -> None:
        """Wait until the broker shows every site in ``names`` with ``status``."""
        deadline = time.monotonic() + timeout
        with self.api("root") as api:
            while True:
                sites = {s["name"]: s for s in api.get("/sites").json()["sites"]}
                if all(sites.get(n, {}).get("status") == status for n in names):
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(f"sites not {status} after {timeout}s: {sites}")
                time.sleep(0.1)

    # --- processes --------------------------------------------------------------------

    def kill(self, process: Process) -> None:
        """SIGKILL: the process dies at once, in the middle of whatever it does."""
        if process.alive:
            process.popen.kill()
        process.popen.wait(timeout=30)

    def stop(self, process: Process) -> None:
        if process.alive:
            process.popen.send_signal(signal.SIGTERM)
            try:
                process.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(timeout=10)

    def close(self) -> None:
        """Kill every VM still running at the sites, then stop every process."""
        for name, process in self.sites.items():
            if process.alive:
                os.kill(process.popen.pid, signal.SIGCONT)
                try:
                    with self.site_api(name, SITE_ADMIN_TOKEN) as api:
                        for vm in api.get("/vms", params={"all": "true"}).json()["vms"]:
                            if vm["state"] not in ("done", "failed"):
                                api.delete(f"/vms/{vm['id']}", params={"force": "true"})
                except (httpx.HTTPError, KeyError, ValueError):
                    pass
        for process in [*self.sites.values(), *([self.broker] if self.broker else [])]:
            if process.alive:
                os.kill(process.popen.pid, signal.SIGCONT)
            self.stop(process)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return f'"{value}"'


def fake_hosts(*cpus: int, memory_mib: int = 16384) -> list[dict[str, Any]]:
    """``fake://`` hosts offering ``cpus`` vCPUs each (8 fake CPUs x overcommit)."""
    return [
        {
            "uri": f"fake://host-{i}",
            "cpu_overcommit": c / 8,
            "reserved_memory_mib": 0,
            "ram_overcommit": memory_mib / 16384,
        }
        for i, c in enumerate(cpus)
    ]


def tiny_image_toml(path: Path, name: str = "tiny") -> str:
    return f'[[images]]\nname = "{name}"\ndisk = "{path}"\n'


def wait_for(predicate: Any, timeout: float = 30, interval: float = 0.1, what: str = "") -> Any:
    """Poll ``predicate()`` until it returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


class FlakyProxy:
    """An HTTP proxy on 127.0.0.1 in front of a site, that can lose answers.

    ``plan(method, path, n)`` (``n`` counts requests of that method and path,
    from 1) returns ``"pass"``, ``"drop"`` (close the connection without
    forwarding) or ``"forward-then-drop"`` (forward, let the site act, then
    close without answering: a lost response).  ``seen`` records
    ``(method, path, action)``.
    """

    def __init__(self, upstream: str, plan: Any) -> None:
        import http.server
        import threading

        self.upstream = upstream.rstrip("/")
        self.plan = plan
        self.seen: list[tuple[str, str, str]] = []
        self.counts: dict[tuple[str, str], int] = {}
        self.port = free_port()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                key = (self.command, path)
                proxy.counts[key] = proxy.counts.get(key, 0) + 1
                action = proxy.plan(self.command, path, proxy.counts[key])
                proxy.seen.append((self.command, path, action))
                if action == "drop":
                    self.close_connection = True
                    return
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length", "connection")
                }
                with httpx.Client(timeout=30) as client:
                    response = client.request(
                        self.command, proxy.upstream + self.path, content=body, headers=headers
                    )
                if action == "forward-then-drop":
                    self.close_connection = True
                    return
                self.send_response(response.status_code)
                for k, v in response.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)

            do_GET = do_POST = do_DELETE = do_PUT = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
