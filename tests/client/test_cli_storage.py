"""``stratus volume``, ``stratus network`` and the disk/network options of ``stratus vm``.

Against a real agent process (``stratus serve site``) on a fake hypervisor
host with one address pool (198.18.0.0/15, nothing is sent anywhere).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from auth.tokens import hash_token
from client.cli.main import main
from tests.client.conftest import RunningSite, start_site


@pytest.fixture(scope="module")
def storage_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSite]:
    workdir = tmp_path_factory.mktemp("cli-storage-site")
    image = workdir / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
    token, admin = "cli-storage-user", "cli-storage-admin"
    proc, url = start_site(
        f"""
[site]
name = "cli-storage"
listen_port = 0
state_dir = "{workdir / "state"}"

[[hosts]]
uri = "fake://cli-storage-host"

[[images]]
name = "tiny"
disk = "{image}"

[[networks]]
name = "public"
type = "public"
cidr = "198.18.40.0/29"
gateway = "198.18.40.1"
fixed = ["198.18.40.6"]

[[networks]]
name = "private"
type = "private"
cidr = "198.18.41.0/24"

[quotas]
volumes_count = 5
volumes_total_gib = 20

[[auth.tokens]]
token_hash = "{hash_token(token)}"
account = "dora"

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


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], site: RunningSite, *args: str) -> Any:
    code, out, err = run(capsys, "--url", site.url, "--token", site.token, "-o", "json", *args)
    assert code == 0, err
    return json.loads(out)


def test_volume_commands(storage_site: RunningSite, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--url", storage_site.url, "--token", storage_site.token]
    volume = run_json(capsys, storage_site, "volume", "create", "-s", "2", "-t", "cli-data")
    assert (volume["size_gib"], volume["tag"], volume["state"]) == (2, "cli-data", "ready")
    copy = run_json(capsys, storage_site, "volume", "create", "--cow", volume["id"], "--public")
    assert (copy["cow_of"], copy["visibility"], copy["size_gib"]) == (volume["id"], "public", 2)
    from_image = run_json(
        capsys, storage_site, "volume", "create", "--image", "tiny", "-s", "1", "-t", "img"
    )
    assert from_image["state"] == "ready"  # --wait is the default

    code, out, _ = run(capsys, *base, "volume", "list", "-t", "^cli-")
    assert code == 0
    header, *rows = out.strip().splitlines()
    assert header.split()[:3] == ["ID", "TAG", "SIZE_GIB"]
    assert [r.split()[0] for r in rows] == [volume["id"]]
    public = run_json(capsys, storage_site, "volume", "list", "--visibility", "public")
    assert [v["id"] for v in public] == [copy["id"]]
    updated = run_json(capsys, storage_site, "volume", "update", volume["id"], "-t", "renamed")
    assert updated["tag"] == "renamed"
    shown = run_json(capsys, storage_site, "volume", "show", volume["id"])
    assert shown["tag"] == "renamed"

    [vm] = run_json(capsys, storage_site, "vm", "run", "tiny", "--wait", "ready")
    disk = run_json(capsys, storage_site, "volume", "attach", from_image["id"], vm["id"])
    assert disk["device"] == "vdc" and disk["readonly"] is False
    ro = run_json(capsys, storage_site, "volume", "attach", copy["id"], vm["id"], "--readonly")
    assert ro["device"] == "vdd" and ro["readonly"] is True
    static = run_json(capsys, storage_site, "vm", "attach-static", vm["id"], "tiny")
    assert static["device"] == "vde" and static["kind"] == "static"
    code, out, _ = run(capsys, *base, "vm", "disks", vm["id"])
    assert code == 0 and [line.split()[1] for line in out.strip().splitlines()[1:]] == [
        "vdc",
        "vdd",
        "vde",
    ]
    run_json(capsys, storage_site, "vm", "detach-disk", vm["id"], "vde")
    run_json(capsys, storage_site, "volume", "detach", copy["id"])  # the only VM that has it
    run_json(capsys, storage_site, "volume", "detach", from_image["id"], vm["id"])
    assert run_json(capsys, storage_site, "vm", "disks", vm["id"]) == []

    code, _, err = run(capsys, *base, "volume", "detach", copy["id"])
    assert code == 1 and "not attached" in err and "(not_attached, HTTP 409)" in err
    code, _, err = run(capsys, *base, "volume", "delete", volume["id"])  # origin of a copy
    assert code == 1 and "(volume_in_use, HTTP 409)" in err
    deleted = run_json(capsys, storage_site, "volume", "delete", copy["id"], volume["id"])
    assert [d["deleted"] for d in deleted] == [True, True]
    run_json(capsys, storage_site, "vm", "kill", vm["id"])
    run_json(capsys, storage_site, "volume", "delete", from_image["id"])


def test_volume_errors_are_one_line(
    storage_site: RunningSite, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--url", storage_site.url, "--token", storage_site.token]
    code, _, err = run(capsys, *base, "volume", "create", "-s", "2000")
    assert code == 2 and "1<=x<=1024" in err  # refused by the CLI already
    code, _, err = run(capsys, *base, "volume", "create", "-s", "21")
    [line] = err.strip().splitlines()
    assert code == 1 and line.startswith("stratus: error: volume quota exceeded: dora uses ")
    assert line.endswith("21 GiB more would pass the limit of 20 GiB (quota_exceeded, HTTP 403)")
    code, _, err = run(capsys, *base, "volume", "show", "../../etc/passwd")
    assert code == 1 and "(not_found, HTTP 404)" in err
    code, _, err = run(capsys, *base, "volume", "update", "00000000-0000-4000-8000-000000000000")
    assert code == 2 and "--tag" in err
    code, _, err = run(capsys, *base, "volume", "create")
    assert code == 1 and "size_gib is required" in err


def test_network_commands_and_vm_run_options(
    storage_site: RunningSite, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--url", storage_site.url, "--token", storage_site.token]
    code, out, _ = run(capsys, *base, "network", "list")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split() == [
        "NAME",
        "TYPE",
        "CIDR",
        "GATEWAY",
        "DEFAULT",
        "SIZE",
        "LEASED",
        "FREE",
    ]
    assert lines[1].split()[:6] == ["public", "public", "198.18.40.0/29", "198.18.40.1", "yes", "5"]

    volume = run_json(capsys, storage_site, "volume", "create", "-s", "1")
    [vm] = run_json(
        capsys,
        storage_site,
        "vm",
        "run",
        "tiny",
        "--network",
        "public",
        "--address",
        "198.18.40.6",
        "--volume",
        volume["id"],
        "--static-disk",
        "tiny",
    )
    assert (vm["network"], vm["address"]) == ("public", "198.18.40.6")
    disks = run_json(capsys, storage_site, "vm", "disks", vm["id"])
    assert [(d["device"], d["kind"], d["readonly"]) for d in disks] == [
        ("vdc", "volume", False),
        ("vdd", "static", True),
    ]
    shared = run_json(capsys, storage_site, "volume", "create", "-s", "1")
    [other] = run_json(
        capsys,
        storage_site,
        "vm",
        "run",
        "tiny",
        "--network",
        "private",
        "--readonly-volume",
        shared["id"],
    )
    assert other["network"] == "private" and other["address"] == "198.18.41.1"
    code, _, err = run(capsys, *base, "vm", "run", "tiny", "--address", "198.18.40.6")
    assert code == 1 and "(address_in_use, HTTP 409)" in err
    code, _, err = run(capsys, *base, "vm", "run", "tiny", "--network", "dmz")
    assert code == 1 and "no network 'dmz'" in err

    shown = run_json(capsys, storage_site, "network", "show", "public")
    assert [lease["address"] for lease in shown["leases"]] == ["198.18.40.6"]
    code, out, _ = run(capsys, *base, "network", "show", "public")
    assert code == 0 and "198.18.40.6" in out and "ADDRESS" in out
    code, _, err = run(capsys, *base, "network", "show", "nope")
    assert code == 1 and "(not_found, HTTP 404)" in err
    run_json(capsys, storage_site, "vm", "kill", vm["id"], other["id"])
    run_json(capsys, storage_site, "volume", "delete", volume["id"], shared["id"])
