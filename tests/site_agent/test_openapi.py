"""The site agent's OpenAPI document matches what the running app serves and answers."""

from __future__ import annotations

from typing import Any

from tests.openapi_check import ResponseChecker, documented_operations, routed_operations
from tests.site_agent.conftest import auth


async def test_document_lists_exactly_the_served_operations(make_site: Any) -> None:
    site = await make_site()
    resp = await site.client.get("/api/v1/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    ResponseChecker(doc)  # validates the document itself
    assert documented_operations(doc) == routed_operations(site.client.app)


async def test_live_responses_match_the_document(make_site: Any) -> None:
    site = await make_site()
    checker = ResponseChecker(await (await site.client.get("/api/v1/openapi.json")).json())
    calls: list[tuple[str, str, dict[str, Any] | None, str]] = [
        ("POST", "/api/v1/vms", {"image": "tiny", "name": "doc-check"}, "alice"),
    ]
    resp = await site.client.post("/api/v1/vms", json=calls[0][2], headers=auth("alice"))
    created = await resp.json()
    checker.check("POST", "/api/v1/vms", resp.status, created)
    vm_id = created["vms"][0]["id"]
    await site.wait(vm_id)
    for method, path, user in [
        ("GET", "/api/v1/vms", "alice"),
        ("GET", f"/api/v1/vms/{vm_id}", "alice"),
        ("GET", f"/api/v1/vms/{vm_id}/events", "alice"),
        ("GET", f"/api/v1/vms/{vm_id}/console", "alice"),
        ("POST", f"/api/v1/vms/{vm_id}/reboot", "alice"),
        ("GET", "/api/v1/images", "alice"),
        ("GET", "/api/v1/hosts", "root"),
        ("GET", "/api/v1/health", "alice"),
        ("GET", "/api/v1/whoami", "alice"),
        ("GET", "/api/v1/accounts", "root"),
        ("GET", "/api/v1/accounts/nobody", "root"),  # error body
        ("DELETE", f"/api/v1/vms/{vm_id}", "alice"),
        ("GET", "/api/v1/quarantine", "root"),
        ("GET", "/api/v1/vms/00000000-0000-4000-8000-000000000000", "alice"),  # error body
        ("POST", f"/api/v1/vms/{vm_id}/stop", "alice"),  # 409 error body
    ]:
        resp = await site.client.request(method, path, headers=auth(user))
        checker.check(method, path, resp.status, await resp.json())


async def test_image_responses_match_the_document(make_site: Any) -> None:
    site = await make_site()
    checker = ResponseChecker(await (await site.client.get("/api/v1/openapi.json")).json())
    body = {"name": "doc-img", "url": "http://127.0.0.1:9/x", "size": 10, "sha256": "ab" * 32}
    calls: list[tuple[str, str, dict[str, Any] | None, str]] = [
        ("POST", "/api/v1/images", body, "alice"),
        ("POST", "/api/v1/images", body, "alice"),  # 409 error body
        ("GET", "/api/v1/images/doc-img", None, "alice"),
        ("GET", "/api/v1/images/tiny", None, "alice"),
        ("GET", "/api/v1/images", None, "root"),
        ("DELETE", "/api/v1/images/doc-img", None, "alice"),
        ("DELETE", "/api/v1/images/doc-img", None, "alice"),  # 404 error body
    ]
    for method, path, json_body, user in calls:
        resp = await site.client.request(method, path, json=json_body, headers=auth(user))
        checker.check(method, path, resp.status, await resp.json())
    vm = await site.create()
    await site.wait(vm["id"])
    path = f"/api/v1/vms/{vm['id']}/stop"
    resp = await site.client.post(path, json={"save": {"name": "doc-saved"}}, headers=auth("alice"))
    checker.check("POST", path, resp.status, await resp.json())
    assert resp.status == 202
    path = f"/api/v1/vms/{vm['id']}"
    resp = await site.client.delete(path, params={"force": "true"}, headers=auth("alice"))
    checker.check("DELETE", path, resp.status, await resp.json())


async def test_volume_and_network_responses_match_the_document(make_site: Any) -> None:
    pool = {"name": "public", "type": "public", "cidr": "198.18.10.0/29", "gateway": "198.18.10.1"}
    site = await make_site(networks=[pool])
    checker = ResponseChecker(await (await site.client.get("/api/v1/openapi.json")).json())

    async def check(method: str, path: str, user: str = "alice", body: Any = None) -> Any:
        resp = await site.client.request(method, path, json=body, headers=auth(user))
        data = await resp.json()
        checker.check(method, path, resp.status, data)
        return data

    vm = await site.create()
    await site.wait(vm["id"])
    volume = await check("POST", "/api/v1/volumes", body={"size_gib": 1, "tag": "doc"})
    copied = await check("POST", "/api/v1/volumes", body={"image": "tiny", "size_gib": 1})
    await check("GET", f"/api/v1/volumes/{copied['id']}?wait=ready&timeout=30")
    vol = f"/api/v1/volumes/{volume['id']}"
    await check("GET", "/api/v1/volumes")
    await check("GET", vol)
    await check("PATCH", vol, body={"visibility": "public"})
    await check("POST", f"{vol}/attach", body={"vm_id": vm["id"]})
    await check("GET", f"/api/v1/vms/{vm['id']}/disks")
    await check("DELETE", vol)  # 409 error body: attached
    await check("POST", f"{vol}/detach", body={})
    await check("POST", f"{vol}/detach", body={})  # 409 error body: not attached
    await check("POST", f"/api/v1/vms/{vm['id']}/disks", body={"static_disk": "tiny"})
    await check("DELETE", f"/api/v1/vms/{vm['id']}/disks/vdc")
    await check("DELETE", vol)
    await check("POST", "/api/v1/volumes", body={"size_gib": 2000})  # 422 error body
    await check("GET", "/api/v1/networks")
    await check("GET", "/api/v1/networks/public", "root")
    await check("GET", "/api/v1/networks/nope")  # 404 error body
