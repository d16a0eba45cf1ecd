"""The ``stratus`` command against a running site agent (fake hypervisor hosts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client.cli.main import main
from tests.client.conftest import RunningSite


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_vm_lifecycle_through_the_cli(
    fake_site: RunningSite, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = ["--url", fake_site.url, "--token", fake_site.token]
    ids_file = tmp_path / "ids"
    code, out, err = run(
        capsys,
        *base,
        "-o",
        "json",
        "vm",
        "run",
        "tiny",
        "--name",
        "cli-vm",
        "-n",
        "2",
        "-c",
        "ROLE=test",
        "--ids-file",
        str(ids_file),
        "--wait",
        "ready",
    )
    assert code == 0, err
    vms = json.loads(out)
    assert [v["name"] for v in vms] == ["cli-vm-0", "cli-vm-1"]
    assert all(v["state"] == "running" and v["ready"] for v in vms)
    assert ids_file.read_text().split() == [v["id"] for v in vms]
    assert "waiting for 2 VM(s)" in err  # progress went to stderr

    code, out, _ = run(capsys, *base, "vm", "list")
    assert code == 0
    header, *rows = out.strip().splitlines()
    assert header.split()[:3] == ["ID", "NAME", "STATE"]
    assert {r.split()[0] for r in rows} == {v["id"] for v in vms}

    first = vms[0]["id"]
    code, out, _ = run(capsys, *base, "vm", "console", first)
    assert f"STRATUS-READY {first} none" in out
    code, out, _ = run(capsys, *base, "vm", "events", first)
    assert "running" in out and "guest ready" in out
    code, out, _ = run(capsys, *base, "vm", "reboot", first)
    assert code == 0 and first in out
    code, out, err = run(capsys, *base, "vm", "stop", first)
    assert code == 0, err
    assert "done" in out
    code, out, _ = run(capsys, *base, "-o", "json", "vm", "kill", vms[1]["id"])
    assert code == 0 and json.loads(out)[0]["state"] == "done"
    code, out, _ = run(capsys, *base, "-o", "json", "vm", "show", first)
    assert json.loads(out)["state"] == "done"


def test_errors_are_one_line(fake_site: RunningSite, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--url", fake_site.url, "--token", fake_site.token]
    code, out, err = run(capsys, *base, "vm", "run", "no-such-image")
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [
        "stratus: error: unknown image 'no-such-image' (validation_failed, HTTP 422)"
    ]
    code, _, err = run(capsys, *base, "vm", "show", "00000000-0000-4000-8000-000000000000")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "no VM with id" in err
    code, _, err = run(capsys, "--url", fake_site.url, "--token", "bad", "vm", "list")
    assert code == 1 and "HTTP 401" in err and "Traceback" not in err
    code, _, err = run(capsys, "--url", "http://127.0.0.1:9", "--token", "x", "vm", "list")
    assert code == 1 and "cannot reach" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, *base, "vm", "run", "tiny", "--cpu", "2")
    assert code == 2 and "--cpu and --ram go together" in err
    code, _, err = run(capsys, *base, "vm", "run", "tiny", "-c", "novalue")
    assert code == 2 and "KEY=VALUE" in err


def test_config_file_endpoints_and_environment(
    fake_site: RunningSite,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "config.toml"
    token_file = tmp_path / "admin.token"
    token_file.write_text(fake_site.admin_token + "\n")
    config.write_text(f"""
default = "user"
[endpoints.user]
url = "{fake_site.url}"
token = "{fake_site.token}"
[endpoints.admin]
url = "{fake_site.url}"
token_file = "{token_file}"
""")
    monkeypatch.setenv("STRATUS_CONFIG", str(config))
    for var in ("STRATUS_URL", "STRATUS_TOKEN", "STRATUS_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    code, out, err = run(capsys, "-o", "json", "image", "list")
    assert code == 0, err
    assert [i["name"] for i in json.loads(out)] == ["tiny"]
    code, _, err = run(capsys, "host", "list")  # default endpoint is a plain user
    assert code == 1 and "site-admin" in err
    code, out, err = run(capsys, "-e", "admin", "-o", "json", "host", "list")
    assert code == 0, err
    assert json.loads(out)[0]["uri"] == "fake://cli-host"
    monkeypatch.setenv("STRATUS_ENDPOINT", "admin")
    code, out, _ = run(capsys, "-o", "json", "host", "list")
    assert code == 0
    code, _, err = run(capsys, "-e", "nowhere", "vm", "list")
    assert code == 1 and "unknown endpoint 'nowhere'" in err


def test_service_side_commands(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import tomllib

    from site_agent.config import SiteConfig

    code, out, _ = run(capsys, "config", "example", "site")
    assert code == 0
    SiteConfig.model_validate(tomllib.loads(out))  # the example is a valid config
    code, out, err = run(capsys, "token", "new", "--account", "dave")
    token = err.split("token: ", 1)[1].strip()
    code, hashed, _ = run(capsys, "token", "hash", token)
    assert hashed.strip() in out and 'account = "dave"' in out
    bad = tmp_path / "bad.toml"
    bad.write_text("[site]\nname = 'UPPER'\nbogus = 1\n")
    code, _, err = run(capsys, "serve", "site", "--config", str(bad))
    assert code == 1
    assert "site.name" in err and "site.bogus" in err and "hosts" in err
