"""Bad input to the site API: every case a clear 4xx JSON error, nothing created or left behind."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from tests.site_agent.conftest import auth


async def _assert_nothing_created(site: Any) -> None:
    listed = await (await site.client.get("/api/v1/vms?all=true", headers=auth("root"))).json()
    assert listed["vms"] == []
    for driver in site.drivers.values():
        assert driver.domains == {}
    vms_dir: Path = site.config.site.state_dir / "vms"
    assert not vms_dir.exists() or list(vms_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"image": "no-such-image"}, 422, "unknown image 'no-such-image'"),
        ({"image": "tiny", "vcpus": 0, "memory_mib": 512}, 422, "vcpus"),
        ({"image": "tiny", "vcpus": 1, "memory_mib": 10 * 1024 * 1024}, 422, "memory_mib"),
        ({"image": "tiny", "vcpus": 64, "memory_mib": 512 * 1024}, 409, "no host can take"),
        ({"image": "tiny", "name": "</name><devices>"}, 422, "name"),
        ({"image": "tiny", "colour": "blue"}, 422, "colour"),
        ({"image": "tiny", "instance_type": "x9.huge"}, 422, "unknown instance type"),
        (
            {"image": "tiny", "instance_type": "m1.small", "vcpus": 1, "memory_mib": 512},
            422,
            "either",
        ),
        ({"image": "tiny", "vcpus": 2}, 422, "go together"),
        ({"image": "tiny", "context": {"BAD KEY": "x"}}, 422, "context key"),
        ({"image": "tiny", "context": {"K": "a\nb"}}, 422, "control character"),
        ({"image": "tiny", "ssh_keys": ["not a key"]}, 422, "OpenSSH"),
        ({"image": "tiny", "user_data": "x" * (16 * 1024 + 1)}, 422, "user_data"),
        ({"image": "tiny", "count": 0}, 422, "count"),
        ({"image": "tiny", "count": 50}, 422, "above this site's limit"),
        ({}, 422, "image"),
    ],
)
async def test_bad_create_bodies(
    make_site: Any, body: dict[str, Any], status: int, needle: str
) -> None:
    site = await make_site()
    resp = await site.client.post("/api/v1/vms", json=body, headers=auth("alice"))
    assert resp.status == status, await resp.text()
    error = (await resp.json())["error"]
    assert needle in error["message"] or needle in str(error.get("details")), error
    await _assert_nothing_created(site)


@pytest.mark.parametrize(
    ("raw", "content_type", "needle"),
    [
        (b"{not json", "application/json", "not valid JSON"),
        (b"[1, 2]", "application/json", "JSON object"),
        (b"", "application/json", "empty"),
        (b"\xff\xfe", "application/json", "not valid UTF-8"),
    ],
)
async def test_malformed_bodies(make_site: Any, raw: bytes, content_type: str, needle: str) -> None:
    site = await make_site()
    resp = await site.client.post(
        "/api/v1/vms", data=raw, headers={**auth("alice"), "Content-Type": content_type}
    )
    assert resp.status == 400
    assert needle in (await resp.json())["error"]["message"]
    await _assert_nothing_created(site)


async def test_oversized_body(make_site: Any) -> None:
    site = await make_site()
    resp = await site.client.post(
        "/api/v1/vms",
        data=io.BytesIO(b"{" + b" " * (2 << 20) + b"}"),
        headers={**auth("alice"), "Content-Type": "application/json"},
    )
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "Basic YWxpY2U6eA=="},
        {"Authorization": "Bearer " + "x" * 20000},
    ],
)
async def test_every_endpoint_needs_a_valid_token(make_site: Any, headers: dict[str, str]) -> None:
    site = await make_site()
    for method, path in [
        ("GET", "/vms"),
        ("POST", "/vms"),
        ("GET", "/images"),
        ("GET", "/hosts"),
        ("GET", "/vms/00000000-0000-4000-8000-000000000000/events"),
    ]:
        resp = await site.client.request(
            method, "/api/v1" + path, headers=headers, json={"image": "tiny"}
        )
        assert resp.status == 401, (method, path)
        error = (await resp.json())["error"]
        assert error["code"] == "unauthorized"
        assert "wrong-token" not in error["message"]
    await _assert_nothing_created(site)


async def test_unknown_vm_ids(make_site: Any) -> None:
    site = await make_site()
    for vm_id in ("00000000-0000-4000-8000-000000000000", "not-a-uuid", "..%2F..%2Fetc"):
        for method, suffix in (
            ("GET", ""),
            ("DELETE", ""),
            ("POST", "/reboot"),
            ("GET", "/events"),
        ):
            resp = await site.client.request(
                method, f"/api/v1/vms/{vm_id}{suffix}", headers=auth("alice")
            )
            assert resp.status == 404, (vm_id, method, suffix)
            assert (await resp.json())["error"]["code"] == "not_found"


async def test_wrong_state_operations_are_409(make_site: Any) -> None:
    site = await make_site()
    vm = await site.create()
    await site.wait(vm["id"])
    await site.client.delete(f"/api/v1/vms/{vm['id']}", headers=auth("alice"))
    for action in ("stop", "reboot"):
        resp = await site.client.post(f"/api/v1/vms/{vm['id']}/{action}", headers=auth("alice"))
        assert resp.status == 409
        assert "only a running VM" in (await resp.json())["error"]["message"]


async def test_bad_query_parameters(make_site: Any) -> None:
    site = await make_site()
    vm = await site.create()
    resp = await site.client.get(f"/api/v1/vms/{vm['id']}?wait=forever", headers=auth("alice"))
    assert resp.status == 422
    resp = await site.client.get("/api/v1/vms?colour=blue", headers=auth("alice"))
    assert resp.status == 422


async def test_bad_idempotency_key(make_site: Any) -> None:
    site = await make_site()
    resp = await site.client.post(
        "/api/v1/vms",
        json={"image": "tiny"},
        headers={**auth("alice"), "Idempotency-Key": "has spaces"},
    )
    assert resp.status == 400
    await _assert_nothing_created(site)


async def test_non_admin_cannot_see_hosts_or_quarantine(make_site: Any) -> None:
    site = await make_site()
    for path in ("/hosts", "/quarantine"):
        resp = await site.client.get("/api/v1" + path, headers=auth("alice"))
        assert resp.status == 403
        assert "site-admin" in (await resp.json())["error"]["message"]


async def test_unknown_path_and_method(make_site: Any) -> None:
    site = await make_site()
    resp = await site.client.get("/api/v1/nothing-here", headers=auth("alice"))
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    resp = await site.client.put("/api/v1/vms", headers=auth("alice"))
    assert resp.status == 405 and (await resp.json())["error"]["code"] == "method_not_allowed"
