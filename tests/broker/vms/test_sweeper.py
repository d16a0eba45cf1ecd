"""The orphan sweep acts as the federation: it removes what was made through this broker
and lost (a create whose answer never came), and never touches what users made at the
site directly.

The site answers through a proxy that can lose answers (:class:`FlakyProxy`); the
broker's grace period is 2 s and it sweeps every second (fedenv).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.broker.fedenv import (
    SITE_ADMIN_TOKEN,
    Federation,
    FlakyProxy,
    SiteSpec,
    fake_hosts,
    free_port,
    tiny_image_toml,
    wait_for,
)

BROKER = "test-broker"


def site_volumes(fed: Federation) -> list[dict[str, Any]]:
    with fed.site_api("site-a", SITE_ADMIN_TOKEN) as api:
        volumes: list[dict[str, Any]] = api.get("/volumes", params={"all": "true"}).json()[
            "volumes"
        ]
        return volumes


def test_lost_creates_are_swept_as_the_federation_and_direct_ones_are_kept(
    federation: Federation, tiny_image: Path
) -> None:
    spec = SiteSpec("site-a", fake_hosts(8), tiny_image_toml(tiny_image), port=free_port())
    proxy = FlakyProxy(f"http://127.0.0.1:{spec.port}", lambda method, path, n: "pass")
    try:
        spec.public_url = proxy.url
        federation.start_broker(["site-a"])
        federation.start_site(spec)
        federation.wait_sites(["site-a"])
        # Made at the site directly by a site user: never the broker's to sweep.
        with federation.site_api("site-a", SITE_ADMIN_TOKEN) as site:
            direct_vm = site.post("/vms", json={"image": "tiny"}).json()["vms"][0]
            direct_volume = site.post("/volumes", json={"size_gib": 1}).json()

        def lose_creates(method: str, path: str, n: int) -> str:
            if path not in ("/api/v1/vms", "/api/v1/volumes"):
                return "pass"
            if method == "POST":  # the site makes it, its answer is lost, retries too
                return "forward-then-drop" if n == 1 else "drop"
            return "drop"  # no sweep can list the site until the orphans are checked

        proxy.plan = lose_creates
        with federation.api() as api:
            vm = api.post("/vms", json={"image": "tiny"})
            assert vm.status_code == 503, vm.text  # the only site failed
            volume = api.post("/volumes", json={"size_gib": 1})
            assert volume.status_code == 503, volume.text
            assert api.get("/vms").json()["vms"] == []
            assert api.get("/volumes").json()["volumes"] == []
        lost = [v for v in federation.site_vms("site-a") if v["id"] != direct_vm["id"]]
        assert [(v["owner"], v["via"]) for v in lost] == [("alice", BROKER)]
        lost_volumes = [v for v in site_volumes(federation) if v["id"] != direct_volume["id"]]
        assert [(v["owner"], v["via"]) for v in lost_volumes] == [("alice", BROKER)]

        proxy.plan = lambda method, path, n: "pass"
        wait_for(
            lambda: all(
                v["state"] == "done"
                for v in federation.site_vms("site-a")
                if v["id"] == lost[0]["id"]
            ),
            what="the lost VM to be swept",
        )
        wait_for(
            lambda: lost_volumes[0]["id"] not in {v["id"] for v in site_volumes(federation)},
            what="the lost volume to be swept",
        )
        by_id = {v["id"]: v for v in federation.site_vms("site-a")}
        assert by_id[direct_vm["id"]]["state"] != "done", "the direct VM is kept"
        assert direct_volume["id"] in {v["id"] for v in site_volumes(federation)}
        assert federation.broker is not None
        log = federation.broker.log
        assert "orphan sweep: killing VM" in log and "orphan sweep: deleting volume" in log
        # The sweep listed as the federation: through the proxy, with the broker's token.
        listed = [
            p for m, p, _ in proxy.seen if m == "GET" and p in ("/api/v1/vms", "/api/v1/volumes")
        ]
        assert listed, "the sweep asked the site"
    finally:
        proxy.close()
