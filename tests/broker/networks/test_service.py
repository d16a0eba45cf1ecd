"""Networks through the broker: every site's pools with their site, one pool with your leases.

A broker and two site agents on fake hosts, each with address pools (the
198.18.0.0/15 benchmark range: nothing is sent anywhere).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker.fedenv import Federation, SiteSpec, fake_hosts, tiny_image_toml


def pools(prefix: str, *, private: bool) -> str:
    text = f'[[networks]]\nname = "public"\ntype = "public"\ncidr = "198.18.{prefix}.0/28"\n\n'
    if private:
        text += f'[[networks]]\nname = "lab"\ntype = "private"\ncidr = "198.19.{prefix}.0/24"\n\n'
    return text


@pytest.fixture
def fed(federation: Federation, tiny_image: Path) -> Iterator[Federation]:
    federation.start_broker(["site-a", "site-b"])
    image = tiny_image_toml(tiny_image)
    federation.start_site(SiteSpec("site-a", fake_hosts(4), image, extra=pools("10", private=True)))
    federation.start_site(
        SiteSpec("site-b", fake_hosts(4), image, price=0.2, extra=pools("20", private=False))
    )
    federation.wait_sites(["site-a", "site-b"])
    yield federation


def test_pools_of_every_site_with_their_site_and_one_pool_with_your_leases(
    fed: Federation,
) -> None:
    with fed.api() as api:
        listing = api.get("/networks").json()
        assert not listing["partial"] and listing["warnings"] == []
        assert sorted((n["site"], n["name"], n["cidr"]) for n in listing["networks"]) == [
            ("site-a", "lab", "198.19.10.0/24"),
            ("site-a", "public", "198.18.10.0/28"),
            ("site-b", "public", "198.18.20.0/28"),
        ]
        created = api.post("/vms", json={"image": "tiny", "site": "site-a"})
        assert created.status_code == 202, created.text
        vm = created.json()["vms"][0]

        ambiguous = api.get("/networks/public")
        assert ambiguous.status_code == 409
        assert ambiguous.json()["error"]["code"] == "ambiguous_network"
        assert ambiguous.json()["error"]["details"]["sites"] == ["site-a", "site-b"]

        public_a = api.get("/networks/public", params={"site": "site-a"}).json()
        assert public_a["site"] == "site-a" and public_a["leased"] == 1
        assert [(lease["vm_id"], lease["owner"]) for lease in public_a["leases"]] == [
            (vm["id"], "alice")
        ]
        only = api.get("/networks/lab").json()  # one site has it: no ?site= needed
        assert (only["site"], only["leases"]) == ("site-a", [])
        assert api.get("/networks/nothing").status_code == 404
        assert api.get("/networks/public", params={"site": "mars"}).status_code == 404
    with fed.api("bob") as bob:
        seen = bob.get("/networks/public", params={"site": "site-a"}).json()
        assert seen["leased"] == 1 and seen["leases"] == []  # alice's lease is not shown


def test_listing_is_partial_with_a_warning_while_a_site_is_down(fed: Federation) -> None:
    site_b = fed.sites["site-b"]
    os.kill(site_b.popen.pid, signal.SIGSTOP)
    try:
        with fed.api() as api:
            listing = api.get("/networks")
            assert listing.status_code == 200
            body = listing.json()
            assert body["partial"] is True
            assert len(body["warnings"]) == 1 and "site-b" in body["warnings"][0]
            assert {n["site"] for n in body["networks"]} == {"site-a"}
    finally:
        os.kill(site_b.popen.pid, signal.SIGCONT)
