"""The broker's OpenAPI document matches what the running broker serves and answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from broker.app import build_broker_app
from broker.config import BrokerConfig
from core.config import load_config
from tests.broker.fedenv import Federation, SiteSpec, fake_hosts, tiny_image_toml, wait_for
from tests.openapi_check import ResponseChecker, documented_operations, routed_operations


def test_document_lists_exactly_the_served_operations_and_answers_match_it(
    federation: Federation, tiny_image: Path
) -> None:
    federation.start_broker(["site-a"])
    federation.start_site(SiteSpec("site-a", fake_hosts(2), tiny_image_toml(tiny_image)))
    federation.wait_sites(["site-a"])
    with federation.api() as api:
        doc = api.get("/openapi.json").json()
    checker = ResponseChecker(doc)  # validates the document itself
    assert federation.broker_config is not None
    app = build_broker_app(load_config(federation.broker_config, BrokerConfig))
    assert documented_operations(doc) == routed_operations(app)

    with federation.api() as api:
        response = api.post("/vms", json={"image": "tiny", "name": "doc-check"})
        checker.check("POST", "/api/v1/vms", response.status_code, response.json())
        vm_id = response.json()["vms"][0]["id"]
        queued = api.post(
            "/vms", json={"image": "tiny", "vcpus": 2, "memory_mib": 256, "queue": True}
        )
        checker.check("POST", "/api/v1/vms", queued.status_code, queued.json())
        wait_for(lambda: api.get(f"/vms/{vm_id}").json()["state"] == "running")
        created = api.post("/volumes", json={"size_gib": 1, "site": "site-a"})
        checker.check("POST", "/api/v1/volumes", created.status_code, created.json())
        volume = f"/volumes/{created.json()['id']}"
        for method, path, body in [
            ("PATCH", volume, {"tag": "doc"}),
            ("POST", volume + "/attach", {"vm_id": vm_id}),
            ("POST", volume + "/detach", {"vm_id": vm_id}),
            ("POST", "/volumes", {"size_gib": 1, "site": "nowhere"}),  # error body
            ("POST", f"/vms/{vm_id}/disks", {"static_disk": "tiny"}),
            ("POST", "/images", {"name": "x", "url": "http://127.0.0.1:9/x", "size": 1}),  # 422
        ]:
            response = api.request(method, path, json=body)
            assert response.status_code < 500, (method, path, response.text)
            checker.check(method, "/api/v1" + path, response.status_code, response.json())
        calls: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", "/volumes", {}),
            ("GET", volume, {"wait": "ready", "timeout": "5"}),
            ("DELETE", volume, {}),
            ("GET", volume, {}),  # error body
            ("GET", "/networks", {}),
            ("GET", "/networks/public", {}),  # error body: the site has no pools
            ("GET", "/vms", {}),
            ("GET", f"/vms/{vm_id}", {"wait": "ready", "timeout": "5"}),
            ("GET", f"/vms/{vm_id}/events", {}),
            ("GET", f"/vms/{vm_id}/console", {}),
            ("POST", f"/vms/{vm_id}/reboot", {}),
            ("GET", "/sites", {}),
            ("GET", "/sites/site-a", {}),
            ("GET", "/sites/nowhere", {}),  # error body
            ("GET", "/images", {}),
            ("GET", "/images/tiny", {}),
            ("GET", "/images/tiny", {"site": "site-a"}),
            ("GET", "/images/nothing", {}),  # error body
            ("DELETE", "/images/nothing", {"site": "site-a"}),  # error body
            ("GET", f"/vms/{vm_id}/disks", {}),
            ("DELETE", f"/vms/{vm_id}/disks/vdz", {}),  # error body (the site's)
            ("GET", "/health", {}),
            ("GET", "/whoami", {}),
            ("POST", f"/vms/{vm_id}/stop", {}),
            ("DELETE", f"/vms/{vm_id}", {}),
            ("DELETE", f"/vms/{queued.json()['vms'][0]['id']}", {}),
            ("GET", "/vms/00000000-0000-4000-8000-000000000000", {}),  # error body
            ("POST", "/vms", {}),  # 400: no body
        ]
        for method, path, params in calls:
            response = api.request(method, path, params=params)
            assert response.status_code < 500, (method, path, response.text)
            checker.check(method, "/api/v1" + path, response.status_code, response.json())
