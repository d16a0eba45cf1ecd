"""Logging in to a running site agent (``stratus serve site`` over HTTPS) with real credentials.

Proxies come from the real ``grid-proxy-init`` and ``voms-proxy-fake``
(tests/grid_world.py); the OIDC issuer is a small aiohttp app on loopback
that rotates its key. The ``stratus`` CLI is the client.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from client.cli.main import main
from site_agent.storage.qemu_img import create_blank
from tests.auth.issuer import TestIssuer, rsa_key
from tests.client.conftest import start_site
from tests.grid_world import VO, GridWorld, Proxies

ADMIN_TOKEN = "site-admin-token"


@dataclass
class LoginSite:
    url: str
    issuer: TestIssuer
    grid: GridWorld


@pytest.fixture
async def login_site(grid: GridWorld, tmp_path: Path) -> AsyncIterator[LoginSite]:
    from auth.tokens import hash_token

    issuer = TestIssuer(keys=[rsa_key("key-1")])
    runner = web.AppRunner(issuer.app())
    await runner.setup()
    http_site = web.TCPSite(runner, "127.0.0.1", 0)
    await http_site.start()
    issuer.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    image = tmp_path / "tiny.qcow2"
    await create_blank(image, 16 << 20)
    config = f"""
[site]
name = "login-site"
listen_port = 0
state_dir = "{tmp_path / "state"}"
[[hosts]]
uri = "fake://login-host"
[[images]]
name = "tiny"
disk = "{image}"
[auth.x509]
enabled = true
ca_dir = "{grid.ca_dir}"
crl_policy = "strict"
server_cert = "{grid.server.cert_path}"
server_key = "{grid.server.key_path}"
[auth.voms]
vomsdir = "{grid.vomsdir}"
[[auth.oidc.issuers]]
issuer = "{issuer.url}"
audience = ["stratus"]
[auth.oidc]
min_refresh_interval_seconds = 0
[[auth.tokens]]
token_hash = "{hash_token(ADMIN_TOKEN)}"
account = "ops"
admin = true
"""
    proc, url = await asyncio.to_thread(start_site, config, tmp_path)
    assert url.startswith("https://")
    yield LoginSite(url=url, issuer=issuer, grid=grid)
    proc.terminate()
    await asyncio.to_thread(proc.wait, 30)
    await runner.cleanup()


async def stratus(
    capsys: pytest.CaptureFixture[str], site: LoginSite, *args: str
) -> tuple[int, str, str]:
    """Run the CLI in a thread (the OIDC issuer is served by this test's event loop)."""
    code = await asyncio.to_thread(main, ["--url", site.url, "-o", "json", *args])
    out, err = capsys.readouterr()
    return code, out, err


async def test_grid_proxy_logs_in_and_owns_its_vms(
    login_site: LoginSite,
    proxies: Proxies,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STRATUS_CA", str(login_site.grid.ca.cert_path))
    code, out, err = await stratus(capsys, login_site, "--cert", str(proxies.alice), "whoami")
    assert code == 0, err
    who = json.loads(out)
    assert who["method"] == "x509"
    assert who["identity"] == login_site.grid.alice.dn  # the end-entity DN, not the proxy's
    alice = who["account"]

    code, out, err = await stratus(
        capsys, login_site, "--cert", str(proxies.alice), "vm", "run", "tiny", "--wait", "ready"
    )
    assert code == 0, err
    vm = json.loads(out)[0]
    assert vm["owner"] == alice
    # A proxy of the proxy is the same person.
    code, out, _ = await stratus(
        capsys, login_site, "--cert", str(proxies.alice_of_proxy), "vm", "list"
    )
    assert [v["id"] for v in json.loads(out)] == [vm["id"]]
    # Bob sees nothing of Alice's.
    code, out, _ = await stratus(capsys, login_site, "--cert", str(proxies.bob), "vm", "list")
    assert code == 0 and json.loads(out) == []
    code, _, err = await stratus(
        capsys, login_site, "--cert", str(proxies.bob), "vm", "kill", vm["id"]
    )
    assert code == 1 and "HTTP 404" in err


async def test_voms_fqans_show_as_groups_in_whoami(
    login_site: LoginSite,
    proxies: Proxies,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STRATUS_CA", str(login_site.grid.ca.cert_path))
    # Found like grid tools do: $X509_USER_PROXY, no --cert given.
    monkeypatch.setenv("X509_USER_PROXY", str(proxies.alice_voms))
    monkeypatch.delenv("STRATUS_TOKEN", raising=False)
    code, out, err = await stratus(capsys, login_site, "whoami")
    assert code == 0, err
    who = json.loads(out)
    assert VO in who["groups"] and f"{VO}/analysis" in who["groups"]
    assert f"/{VO}/analysis/Role=VO-Admin/Capability=NULL" in who["fqans"]
    # The table form shows the same groups to a person.
    code, out, _ = await stratus(capsys, login_site, "-o", "table", "whoami")
    assert code == 0 and f"{VO}/analysis" in out


async def test_oidc_token_logs_in_and_survives_key_rotation(
    login_site: LoginSite, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRATUS_CA", str(login_site.grid.ca.cert_path))
    issuer = login_site.issuer
    code, out, err = await stratus(capsys, login_site, "--token", issuer.token(), "whoami")
    assert code == 0, err
    who = json.loads(out)
    assert who["method"] == "oidc" and who["identity"] == f"user-1234@{issuer.url}"
    assert "ops" in who["groups"]
    new_key = issuer.rotate()
    code, out, err = await stratus(capsys, login_site, "--token", issuer.token(new_key), "whoami")
    assert code == 0, err
    assert json.loads(out)["account"] == who["account"]
    # A token signed by a key the issuer never published is refused.
    code, _, err = await stratus(
        capsys, login_site, "--token", issuer.token(rsa_key("rogue")), "whoami"
    )
    assert code == 1 and "HTTP 401" in err


async def test_admins_manage_accounts_and_groups(
    login_site: LoginSite,
    proxies: Proxies,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STRATUS_CA", str(login_site.grid.ca.cert_path))
    admin = ["--token", ADMIN_TOKEN]
    code, out, err = await stratus(capsys, login_site, *admin, "account", "create", "team-lead")
    assert code == 0, err
    code, out, err = await stratus(
        capsys, login_site, *admin, "account", "link", "team-lead", login_site.grid.bob.dn
    )
    assert code == 0, err
    code, out, err = await stratus(
        capsys, login_site, *admin, "account", "add-group", "team-lead", "physics/higgs"
    )
    assert code == 0, err
    code, out, _ = await stratus(capsys, login_site, "--cert", str(proxies.bob), "whoami")
    who = json.loads(out)
    assert who["account"] == "team-lead" and "physics/higgs" in who["groups"]
    code, out, err = await stratus(
        capsys, login_site, *admin, "account", "remove-group", "team-lead", "physics/higgs"
    )
    assert code == 0, err
    code, out, _ = await stratus(capsys, login_site, "--cert", str(proxies.bob), "whoami")
    assert "physics/higgs" not in json.loads(out)["groups"]
    # Not an admin: 403, and the account list is not shown.
    code, _, err = await stratus(capsys, login_site, "--cert", str(proxies.bob), "account", "list")
    assert code == 1 and "HTTP 403" in err
