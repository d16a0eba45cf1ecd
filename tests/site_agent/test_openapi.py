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
