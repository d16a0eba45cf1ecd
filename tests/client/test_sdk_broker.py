"""The SDK and CLI against a broker's answers (respx stands in for the broker): images
with their sites, ``?site=``, registration at one or every site, the extra columns."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from client.cli.main import main
from client.sdk import StratusClient

URL = "http://broker.test"


def image(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name, "state": "ready", "format": "qcow2", "source": "url", "owner": "alice",
        "size": 1024, "last_used_at": None, **extra,
    }  # fmt: skip


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--url", URL, "--token", "t0k", *args])
    out, err = capsys.readouterr()
    return code, out, err


@respx.mock
def test_site_is_sent_as_a_query_only_when_given() -> None:
    show = respx.get(f"{URL}/api/v1/images/deb").mock(
        return_value=httpx.Response(200, json=image("deb", sites=["site-a"]))
    )
    delete = respx.delete(f"{URL}/api/v1/images/deb").mock(
        return_value=httpx.Response(200, json={"name": "deb", "freed_bytes": 0, "site": "site-a"})
    )
    with StratusClient(URL) as api:
        api.get_image("deb")
        api.get_image("deb", site="site-a")
        api.delete_image("deb", site="site-a")
    assert [dict(c.request.url.params) for c in show.calls] == [{}, {"site": "site-a"}]
    assert dict(delete.calls.last.request.url.params) == {"site": "site-a"}


@respx.mock
def test_image_list_has_a_sites_column_and_prints_the_warnings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    respx.get(f"{URL}/api/v1/images").mock(
        return_value=httpx.Response(
            200,
            json={
                "images": [image("deb", sites=["site-a", "site-b"])],
                "partial": True,
                "warnings": ["site site-c did not answer"],
            },
        )
    )
    code, out, err = run(capsys, "image", "list")
    assert code == 0 and "warning: site site-c did not answer" in err
    header, row = out.strip().splitlines()
    assert header.split()[-1] == "SITES" and row.split()[-1] == "site-a,site-b"
    assert row.split()[1:4] == ["ready", "qcow2", "url"]


@respx.mock
def test_register_at_every_site_shows_each_answer(capsys: pytest.CaptureFixture[str]) -> None:
    registrations = [
        {"site": "site-a", "registered": True, "status": 201, "code": None, "message": None},
        {"site": "site-b", "registered": False, "status": 403, "code": "forbidden",
         "message": "file:// is for site admins"},
    ]  # fmt: skip
    route = respx.post(f"{URL}/api/v1/images").mock(
        return_value=httpx.Response(
            201, json=image("deb", sites=["site-a"], registrations=registrations)
        )
    )
    args = ["image", "register", "deb", "http://x/deb", "--size", "1", "--sha256", "a" * 64]
    code, out, err = run(capsys, *args, "--all-sites")
    assert code == 0, err
    assert json.loads(route.calls.last.request.content)["all_sites"] is True
    assert "site-b  no" in out and "forbidden" in out
    code, out, err = run(capsys, "-o", "json", *args, "--site", "site-a")
    assert code == 0 and json.loads(out)["registrations"][0]["site"] == "site-a"
    assert json.loads(route.calls.last.request.content)["site"] == "site-a"
    code, _, err = run(capsys, *args, "--site", "site-a", "--all-sites")
    assert code == 2 and "not both" in err


@respx.mock
def test_site_list_shows_which_sites_are_simulated(capsys: pytest.CaptureFixture[str]) -> None:
    sites = [
        {"name": "real", "kind": "site", "status": "available", "simulated": False},
        {"name": "fake", "kind": "site", "status": "available", "simulated": True},
    ]
    respx.get(f"{URL}/api/v1/sites").mock(return_value=httpx.Response(200, json={"sites": sites}))
    code, out, _ = run(capsys, "site", "list")
    assert code == 0
    header, *rows = out.strip().splitlines()
    assert header.split()[:4] == ["NAME", "KIND", "STATUS", "SIMULATED"]
    assert [r.split()[:4] for r in rows] == [
        ["real", "site", "available", "no"],
        ["fake", "site", "available", "yes"],
    ]


@respx.mock
def test_stop_save_looks_for_the_image_at_the_vms_site(capsys: pytest.CaptureFixture[str]) -> None:
    vm = {"id": "v1", "name": "a", "state": "done", "ready": False, "site": "site-b"}
    respx.post(f"{URL}/api/v1/vms/v1/stop").mock(return_value=httpx.Response(202, json=vm))
    respx.get(f"{URL}/api/v1/vms/v1").mock(return_value=httpx.Response(200, json=vm))
    shown = respx.get(f"{URL}/api/v1/images/snap").mock(
        return_value=httpx.Response(200, json=image("snap", sites=["site-b"]))
    )
    code, out, err = run(capsys, "vm", "stop", "v1", "--save", "snap")
    assert code == 0, err
    assert out.split()[:4] == ["ID", "NAME", "STATE", "SITE"]
    assert "saved as image snap (1024 bytes)" in err
    assert dict(shown.calls.last.request.url.params) == {"site": "site-b"}


@respx.mock
def test_vm_run_sends_the_site_options(capsys: pytest.CaptureFixture[str]) -> None:
    route = respx.post(f"{URL}/api/v1/vms").mock(
        return_value=httpx.Response(202, json={"vms": [{"id": "v1", "state": "pending"}]})
    )
    code, _, err = run(
        capsys, "-o", "json", "vm", "run", "tiny", "--wait", "none", "--network", "lab",
        "--address", "198.18.0.9", "--host-tag", "gpu", "--volume", "v-1", "--static-disk",
        "data", "--network-type", "private", "--group", "atlas",
    )  # fmt: skip
    assert code == 0, err
    body = json.loads(route.calls.last.request.content)
    assert {k: body[k] for k in ("network", "address", "host_tags", "volumes")} == {
        "network": "lab",
        "address": "198.18.0.9",
        "host_tags": ["gpu"],
        "volumes": ["v-1"],
    }
    assert (body["static_disks"], body["network_type"], body["group"]) == (
        ["data"],
        "private",
        "atlas",
    )
