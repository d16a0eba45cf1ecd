"""Two broker replicas on one PostgreSQL database share the sites' heartbeats and the VMs."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.broker.fedenv import (
    STRATUS,
    USERS,
    Federation,
    SiteSpec,
    fake_hosts,
    free_port,
    start_process,
    tiny_image_toml,
    wait_for,
)
from tests.helpers import fresh_postgres_database


def test_a_second_replica_places_on_a_site_that_heartbeats_to_the_first(
    federation: Federation, tiny_image: Path
) -> None:
    with fresh_postgres_database() as url:
        federation.start_broker(["site-a"], database_url=url)
        federation.start_site(SiteSpec("site-a", fake_hosts(4), tiny_image_toml(tiny_image)))
        federation.wait_sites(["site-a"])
        assert federation.broker_config is not None
        second_dir = federation.root / "broker-2"
        second_dir.mkdir()
        config = second_dir / "broker.toml"
        config.write_text(
            federation.broker_config.read_text().replace(
                f"listen_port = {federation.broker_port}", f"listen_port = {free_port()}"
            )
        )
        second = start_process(
            "broker-2",
            [STRATUS, "serve", "broker", "--config", str(config)],
            second_dir,
        )
        try:
            with httpx.Client(
                base_url=second.url + "/api/v1",
                headers={"Authorization": f"Bearer {USERS['alice']}"},
                verify=federation.pki.client_context(),
                timeout=30,
            ) as api:

                def site_available() -> bool:
                    sites = api.get("/sites").json()["sites"]
                    return bool(sites) and sites[0]["status"] == "available"

                wait_for(site_available, timeout=15, what="replica 2 to see site-a's heartbeats")
                response = api.post("/vms", json={"image": "tiny"})
                assert response.status_code == 202, response.text
                vm = response.json()["vms"][0]
                assert vm["site"] == "site-a"
            with federation.api() as first:
                shown = first.get(f"/vms/{vm['id']}").json()
                assert shown["site_vm_id"] == vm["site_vm_id"], "replica 1 sees it too"
        finally:
            federation.stop(second)
            federation.close()  # before the database is dropped
