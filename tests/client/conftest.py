"""A real site agent process (``stratus serve site``) on fake hypervisor hosts, for CLI tests."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from auth.tokens import hash_token

STRATUS = str(Path(sys.executable).parent / "stratus")


@dataclass(frozen=True)
class RunningSite:
    url: str
    token: str
    admin_token: str
    log: Path


def start_site(config_text: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``stratus serve site`` with ``config_text``; returns the process and its URL."""
    config = workdir / "site.toml"
    config.write_text(config_text)
    ready = workdir / "url"
    ready.unlink(missing_ok=True)
    with (workdir / "agent.log").open("ab") as log:
        proc = subprocess.Popen(
            [STRATUS, "serve", "site", "--config", str(config), "--ready-file", str(ready)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("site agent did not start:\n" + (workdir / "agent.log").read_text())
        time.sleep(0.05)
    return proc, ready.read_text().strip()


@pytest.fixture(scope="module")
def fake_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSite]:
    workdir = tmp_path_factory.mktemp("cli-site")
    image = workdir / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
    token, admin = "cli-user-token", "cli-admin-token"
    proc, url = start_site(
        f"""
[site]
name = "cli-site"
listen_port = 0
state_dir = "{workdir / "state"}"

[[hosts]]
uri = "fake://cli-host"

[[images]]
name = "tiny"
disk = "{image}"

[[auth.tokens]]
token_hash = "{hash_token(token)}"
account = "carol"

[[auth.tokens]]
token_hash = "{hash_token(admin)}"
account = "ops"
admin = true
""",
        workdir,
    )
    yield RunningSite(url=url, token=token, admin_token=admin, log=workdir / "agent.log")
    proc.terminate()
    proc.wait(timeout=30)
