"""The same ``stratus`` CLI against the broker: site commands, placement options, site column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.cli import register
from client.cli.main import cli, main
from tests.broker.fedenv import USERS, Federation, SiteSpec, fake_hosts, tiny_image_toml


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def fed(
    federation: Federation, tiny_image: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Federation:
    federation.start_broker(["site-a", "site-b"])
    federation.start_site(SiteSpec("site-a", fake_hosts(2), tiny_image_toml(tiny_image)))
    federation.start_site(SiteSpec("site-b", fake_hosts(2), tiny_image_toml(tiny_image), price=1))
    federation.wait_sites(["site-a", "site-b"])
    monkeypatch.setenv("STRATUS_CONFIG", str(tmp_path / "no-client-config.toml"))
    monkeypatch.setenv("STRATUS_URL", federation.url)
    monkeypatch.setenv("STRATUS_TOKEN", USERS["alice"])
    monkeypatch.setenv("STRATUS_CA", str(federation.pki.ca.cert_path))
    return federation


def test_site_commands(fed: Federation, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "site", "list")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["NAME", "KIND", "STATUS", "SIMULATED"]
    assert [r.split()[:4] for r in rows] == [
        ["site-a", "site", "available", "yes"],  # fake:// hosts: the VMs run nothing
        ["site-b", "site", "available", "yes"],
    ]
    code, out, _ = run(capsys, "-o", "json", "site", "show", "site-b")
    assert code == 0 and json.loads(out)["price_per_hour"] == 1.0
    code, _, err = run(capsys, "site", "show", "nowhere")
    assert code == 1 and "unknown site 'nowhere' (unknown_site, HTTP 404)" in err


def test_vm_run_with_placement_options_and_the_site_column(
    fed: Federation, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "-o", "json", "vm", "run", "tiny", "--site", "site-b")
    assert code == 0, err
    assert json.loads(out)[0]["site"] == "site-b" and json.loads(out)[0]["state"] == "running"
    code, out, err = run(
        capsys, "-o", "json", "vm", "run", "tiny", "--constraint", "site in [site-b]", "--no-burst"
    )
    assert code == 0, err
    assert json.loads(out)[0]["site"] == "site-b"
    # site-b is full now (2 vCPUs); a request pinned there waits in the queue.
    code, out, err = run(
        capsys,
        "-o",
        "json",
        "vm",
        "run",
        "tiny",
        "--site",
        "site-b",
        "--queue",
        "--deadline",
        "600",
    )
    assert code == 0, err
    queued = json.loads(out)[0]
    assert queued["state"] == "queued" and queued["queue_position"] == 1

    code, out, err = run(capsys, "vm", "list")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["ID", "NAME", "STATE", "SITE"]
    states_and_sites = sorted((r.split()[2], r.split()[3]) for r in rows)
    assert states_and_sites == [("queued", "-"), ("running", "site-b"), ("running", "site-b")]
    code, _, err = run(capsys, "vm", "run", "tiny", "--constraint", "site in [a b]")
    assert code == 1 and "invalid_constraint" in err
    code, _, err = run(capsys, "vm", "run", "tiny", "--site", "mars")
    assert code == 1 and "unknown_site" in err


def test_volume_and_network_commands_against_the_broker(
    fed: Federation, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "-o", "json", "volume", "create", "-s", "1", "--site", "site-b")
    assert code == 0, err
    on_b = json.loads(out)
    assert on_b["site"] == "site-b" and on_b["owner"] == "alice"
    code, out, err = run(capsys, "-o", "json", "volume", "create", "-s", "2", "-t", "near")
    assert code == 0, err
    assert json.loads(out)["site"] == "site-a"  # the cheaper site when none is named

    code, out, err = run(capsys, "volume", "list")
    assert code == 0 and err == ""
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["ID", "TAG", "SITE"]
    assert sorted(r.split()[2] for r in rows if r.split()[1] == "near") == ["site-a"]
    assert any(r.startswith(on_b["id"]) and "site-b" in r.split() for r in rows)

    code, out, err = run(capsys, "volume", "delete", on_b["id"])
    assert code == 0, err
    code, out, err = run(capsys, "-o", "json", "volume", "list")
    assert code == 0 and [v["site"] for v in json.loads(out)] == ["site-a"]

    code, out, err = run(capsys, "network", "list")  # sites without pools: an empty table
    assert code == 0 and err == ""
    code, _, err = run(capsys, "network", "show", "public", "--site", "mars")
    assert code == 1 and "unknown_site" in err


def test_service_commands(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    register(cli)
    code, out, _ = run(capsys, "config", "example", "broker")
    assert code == 0 and "[[trusted_sites]]" in out and "[bursting]" in out
    bad = tmp_path / "broker.toml"
    bad.write_text("[broker]\nname = 'UPPER'\nbogus = 1\n[[trusted_sites]]\nname = 'x'\n")
    code, _, err = run(capsys, "serve", "broker", "--config", str(bad))
    assert code == 1
    assert "broker.name" in err and "broker.bogus" in err and "trusted_sites.0.dn" in err
