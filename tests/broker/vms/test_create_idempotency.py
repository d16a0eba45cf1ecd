"""A retried create makes one VM: the user's key to the broker, the broker's key to the site."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.broker.fedenv import (
    Federation,
    FlakyProxy,
    SiteSpec,
    fake_hosts,
    free_port,
    tiny_image_toml,
)


def test_the_same_idempotency_key_twice_makes_one_vm(
    federation: Federation, tiny_image: Path
) -> None:
    federation.start_broker(["site-a"])
    federation.start_site(SiteSpec("site-a", fake_hosts(8), tiny_image_toml(tiny_image)))
    federation.wait_sites(["site-a"])
    key = "retry-" + uuid.uuid4().hex
    body = {"image": "tiny", "count": 2, "name": "twice"}
    with federation.api() as api:
        first = api.post("/vms", json=body, headers={"Idempotency-Key": key})
        again = api.post("/vms", json=body, headers={"Idempotency-Key": key})
        assert first.status_code == again.status_code == 202
        ids = [v["id"] for v in first.json()["vms"]]
        assert [v["id"] for v in again.json()["vms"]] == ids and len(ids) == 2
        # Another user's identical key is another request.
        with federation.api("bob") as bob_api:
            other = bob_api.post("/vms", json=body, headers={"Idempotency-Key": key})
            assert other.status_code == 202
            assert {v["id"] for v in other.json()["vms"]}.isdisjoint(ids)
        # The same key with another body is refused, and makes nothing.
        reused = api.post("/vms", json={**body, "count": 1}, headers={"Idempotency-Key": key})
        assert reused.status_code == 409
        assert reused.json()["error"]["code"] == "idempotency_key_reused"
        bad = api.post("/vms", json=body, headers={"Idempotency-Key": "no spaces allowed"})
        assert bad.status_code == 400
        assert len(api.get("/vms").json()["vms"]) == 2
    assert len(federation.site_vms("site-a")) == 4  # alice's 2 and bob's 2, nothing more


def test_a_broker_to_site_create_retried_after_a_lost_answer_makes_one_vm(
    federation: Federation, tiny_image: Path
) -> None:
    """The site makes the VM but its answer is lost; the broker retries the POST with the
    same key (tenacity backoff in the peer-site provider) and gets the same VM back."""

    def lose_first_create(method: str, path: str, n: int) -> str:
        return "forward-then-drop" if (method, path, n) == ("POST", "/api/v1/vms", 1) else "pass"

    spec = SiteSpec("site-a", fake_hosts(8), tiny_image_toml(tiny_image), port=free_port())
    proxy = FlakyProxy(f"http://127.0.0.1:{spec.port}", lose_first_create)
    try:
        spec.public_url = proxy.url
        federation.start_broker(["site-a"])
        federation.start_site(spec)
        federation.wait_sites(["site-a"])
        with federation.api() as api:
            created = api.post("/vms", json={"image": "tiny"})
            assert created.status_code == 202, created.text
            vm = created.json()["vms"][0]
        assert vm["site"] == "site-a"
        posts = [action for method, path, action in proxy.seen if method == "POST"]
        assert posts == ["forward-then-drop", "pass"], "one lost answer, one retry"
        at_site = federation.site_vms("site-a")
        assert [v["id"] for v in at_site] == [vm["site_vm_id"]], "exactly one VM at the site"
    finally:
        proxy.close()
