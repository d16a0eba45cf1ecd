"""The same ``stratus`` commands against the broker as against a site: pools, addresses,
host tags, volumes and static disks on ``vm run``; ``vm disks``; ``vm stop --save``;
``image list|show|register|delete`` with the sites each image is at."""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from client.cli.main import main
from tests.broker.fedenv import USERS, Federation, SiteSpec, fake_hosts, tiny_image_toml


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def table(out: str) -> tuple[list[str], dict[str, list[str]]]:
    header, *rows = out.strip().splitlines()
    return header.split(), {r.split()[0]: r.split() for r in rows}


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, int, str]]:
    """``(URL, size, sha256)`` of a qcow2 served over HTTP on 127.0.0.1."""
    root = tmp_path / "served"
    root.mkdir()
    disk = root / "deb.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    data = disk.read_bytes()
    url = f"http://127.0.0.1:{server.server_address[1]}/deb.qcow2"
    yield url, len(data), hashlib.sha256(data).hexdigest()
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def fed(
    federation: Federation, tiny_image: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Federation:
    data = tmp_path / "data.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(data), "8M"], check=True)
    federation.start_broker(["site-a", "site-b"])
    hosts = fake_hosts(4)
    hosts[0]["tags"] = ["gpu"]
    lab = '[[networks]]\nname = "lab"\ntype = "private"\ncidr = "198.19.30.0/24"\n'
    federation.start_site(
        SiteSpec(
            "site-a",
            hosts,
            tiny_image_toml(tiny_image) + tiny_image_toml(data, "data"),
            extra=lab,
        )
    )
    federation.start_site(SiteSpec("site-b", fake_hosts(4), tiny_image_toml(tiny_image), price=1))
    federation.wait_sites(["site-a", "site-b"])
    monkeypatch.setenv("STRATUS_CONFIG", str(tmp_path / "no-client-config.toml"))
    monkeypatch.setenv("STRATUS_URL", federation.url)
    monkeypatch.setenv("STRATUS_TOKEN", USERS["alice"])
    monkeypatch.setenv("STRATUS_CA", str(federation.pki.ca.cert_path))
    return federation


def test_vm_run_with_site_options_and_the_disks_commands(
    fed: Federation, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, "-o", "json", "vm", "run", "tiny", "--network", "lab", "--address",
        "198.19.30.9", "--host-tag", "gpu", "--static-disk", "data",
    )  # fmt: skip
    assert code == 0, err
    [vm] = json.loads(out)
    assert (vm["site"], vm["network"], vm["address"], vm["host"]) == (
        "site-a",
        "lab",
        "198.19.30.9",
        "fake://host-0",
    )
    code, out, err = run(capsys, "vm", "disks", vm["id"])
    assert code == 0, err
    header, rows = table(out)
    assert header == ["VM_ID", "DEVICE", "KIND", "VOLUME_ID", "IMAGE", "READONLY", "SITE"]
    [row] = rows.values()
    assert row[0] == vm["id"] and row[2:] == ["static", "-", "data", "yes", "site-a"]
    device = row[1]
    code, out, err = run(capsys, "vm", "detach-disk", vm["id"], device)
    assert code == 0, err
    code, out, err = run(capsys, "-o", "json", "vm", "attach-static", vm["id"], "data")
    assert code == 0, err
    assert json.loads(out)["site"] == "site-a"

    code, out, err = run(capsys, "-o", "json", "volume", "create", "-s", "1", "--site", "site-b")
    assert code == 0, err
    volume = json.loads(out)
    code, out, err = run(capsys, "-o", "json", "vm", "run", "tiny", "--volume", volume["id"])
    assert code == 0, err
    assert json.loads(out)[0]["site"] == "site-b", "where its volume is"

    code, _, err = run(capsys, "vm", "run", "tiny", "--network", "nowhere")
    assert code == 1 and "placement_failed" in err and "HTTP 409" in err

    code, out, err = run(capsys, "vm", "events", vm["id"])
    assert code == 0, err
    assert out.split()[:3] == ["AT", "SOURCE", "FROM_STATE"]
    assert "broker" in out and "site-a" in out


def test_stop_save_and_the_image_commands(
    fed: Federation, served: tuple[str, int, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "-o", "json", "vm", "run", "tiny", "--site", "site-b")
    assert code == 0, err
    [vm] = json.loads(out)
    code, out, err = run(capsys, "vm", "stop", vm["id"], "--save", "snap")
    assert code == 0, err
    assert "saved as image snap" in err

    code, out, err = run(capsys, "image", "list")
    assert code == 0, err
    header, rows = table(out)
    assert header == [
        "NAME", "STATE", "FORMAT", "SOURCE", "OWNER", "SIZE", "LAST_USED_AT", "SITES",
    ]  # fmt: skip
    assert rows["snap"][1] == "ready" and rows["snap"][3] == "saved"
    assert rows["snap"][4] == "alice" and rows["snap"][-1] == "site-b"
    assert rows["tiny"][1] == "ready" and rows["tiny"][3] == "config"
    assert rows["tiny"][-1] == "site-a,site-b"
    code, out, err = run(capsys, "-o", "json", "image", "show", "snap")
    assert code == 0 and json.loads(out)["sites"] == ["site-b"]
    code, out, err = run(capsys, "-o", "json", "vm", "run", "snap")
    assert code == 0, err
    [booted] = json.loads(out)
    assert booted["site"] == "site-b" and booted["image"] == "snap"
    code, out, err = run(capsys, "vm", "kill", booted["id"])
    assert code == 0, err

    url, size, sha256 = served
    code, out, err = run(
        capsys, "-o", "json", "image", "register", "deb", url, "--size", str(size),
        "--sha256", sha256, "--all-sites",
    )  # fmt: skip
    assert code == 0, err
    assert [r["site"] for r in json.loads(out)["registrations"]] == ["site-a", "site-b"]
    code, _, err = run(capsys, "image", "register", "x", url, "--size", "1", "--sha256", sha256)
    assert code == 1 and "site or all_sites" in err
    code, out, err = run(capsys, "-o", "json", "image", "show", "deb", "--site", "site-a")
    assert code == 0 and json.loads(out)["sites"] == ["site-a"]
    code, _, err = run(capsys, "image", "delete", "deb")
    assert code == 1 and "ambiguous_image" in err
    code, out, err = run(capsys, "image", "delete", "deb", "--site", "site-a")
    assert code == 0, err
    assert table(out)[0] == ["NAME", "FREED_BYTES", "SITE"]
    code, out, err = run(capsys, "image", "delete", "deb", "snap")
    assert code == 0, err
    assert sorted(r[2] for r in table(out)[1].values()) == ["site-b", "site-b"]
