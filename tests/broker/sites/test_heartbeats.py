"""Site registration over mutual TLS, and the ``/sites`` registry.

The test acts as the sites: it sends heartbeats with client certificates
from a CA made here (``cryptography``), to a broker process on loopback.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx
import pytest

from tests.auth.pki import Cred
from tests.broker.fedenv import Federation, FederationPki

REPORT: dict[str, Any] = {
    "public_url": "http://127.0.0.1:9",  # never called in this test
    "hosts": [{"name": "h1", "free_cpus": 4, "free_memory_mib": 8192}],
    "cached_images": ["tiny"],
    "price_per_hour": 0.01,
    "location": {"country": "FR"},
}


def heartbeat(
    federation: Federation, name: str, cred: Cred | None, **report: Any
) -> httpx.Response:
    context = federation.pki.client_context(cred)
    with httpx.Client(verify=context, timeout=10) as client:
        return client.post(
            f"{federation.url}/api/v1/sites/{name}/heartbeat",
            json={**REPORT, "site": name, **report},
        )


@pytest.fixture
def broker(federation: Federation) -> Federation:
    federation.start_broker(["site-a", "site-b"])
    return federation


def test_a_trusted_site_registers_with_its_certificate(broker: Federation) -> None:
    pki = broker.pki
    first = heartbeat(broker, "site-a", pki.site("site-a"))
    assert first.status_code == 200, first.text
    assert first.json() == {"site": "site-a", "registered": True, "heartbeat_timeout_seconds": 3.0}
    again = heartbeat(broker, "site-a", pki.site("site-a"))
    assert again.status_code == 200 and again.json()["registered"] is False
    with broker.api("bob") as api:
        sites = {s["name"]: s for s in api.get("/sites").json()["sites"]}
    assert sites["site-a"]["status"] == "available"
    assert sites["site-a"]["free_cpus"] == 4 and sites["site-a"]["location"] == {"country": "FR"}
    assert sites["site-b"]["status"] == "never-registered"
    assert "has not registered" in sites["site-b"]["reason"]
    with broker.api() as api:
        pinned = api.post("/vms", json={"image": "tiny", "site": "site-b"})
    assert pinned.status_code == 409
    assert "has not registered" in pinned.json()["error"]["details"]["sites"]["site-b"]


def test_heartbeats_without_an_acceptable_certificate_are_refused(broker: Federation) -> None:
    pki: FederationPki = broker.pki
    no_cert = heartbeat(broker, "site-a", None)
    assert no_cert.status_code == 401
    assert no_cert.json()["error"]["code"] == "site_certificate_required"

    # Valid certificate of the federation CA, but not the one trusted for this name.
    as_other = heartbeat(broker, "site-a", pki.site("site-b"))
    assert as_other.status_code == 403 and as_other.json()["error"]["code"] == "site_not_trusted"
    assert "not the one trusted for site 'site-a'" in as_other.json()["error"]["message"]

    # Valid certificate, DN not on the allow-list.
    intruder = heartbeat(broker, "intruder", pki.site("intruder"))
    assert intruder.status_code == 403 and "not trusted" in intruder.json()["error"]["message"]

    # The right DN from a CA the broker does not trust: refused in the TLS handshake.
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        heartbeat(broker, "site-a", pki.foreign("site-a"))

    # A user's token is no way in either.
    with httpx.Client(verify=pki.client_context(), timeout=10) as client:
        response = client.post(
            f"{broker.url}/api/v1/sites/site-a/heartbeat",
            json={**REPORT, "site": "site-a"},
            headers={"Authorization": "Bearer root-broker-token-00003"},
        )
    assert response.status_code == 401

    # A trusted site cannot report for another name, nor send a bad report.
    mismatch = heartbeat(broker, "site-a", pki.site("site-a"), site="site-b")
    assert mismatch.status_code == 400
    bad = heartbeat(broker, "site-a", pki.site("site-a"), hosts=[{"free_cpus": -1}])
    assert bad.status_code == 422
    with broker.api() as api:
        sites = {s["name"]: s["status"] for s in api.get("/sites").json()["sites"]}
    assert sites == {"site-a": "never-registered", "site-b": "never-registered"}


def test_a_broker_without_tls_refuses_registrations(federation: Federation) -> None:
    federation.start_broker(["site-a"], tls=False)
    assert federation.url.startswith("http://")
    response = httpx.post(
        f"{federation.url}/api/v1/sites/site-a/heartbeat", json={**REPORT, "site": "site-a"}
    )
    assert response.status_code == 401
    assert "must come over HTTPS" in response.json()["error"]["message"]


def test_the_sites_listing_needs_a_user_and_shows_unknown_names_as_404(
    broker: Federation,
) -> None:
    context = ssl.create_default_context(cafile=str(broker.pki.ca.cert_path))
    assert httpx.get(f"{broker.url}/api/v1/sites", verify=context).status_code == 401
    with broker.api() as api:
        assert api.get("/sites/site-a").json()["name"] == "site-a"
        missing = api.get("/sites/nowhere")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_site"
        health = api.get("/health").json()
        assert health["status"] == "ok" and health["sites_known"] == 2


def test_the_sites_listing_says_which_sites_run_on_simulated_hosts(broker: Federation) -> None:
    pki = broker.pki
    simulated = [{"name": "fake://h", "free_cpus": 4, "free_memory_mib": 8192, "simulated": True}]
    mixed = [*simulated, {"name": "qemu:///system", "free_cpus": 2, "free_memory_mib": 4096}]
    assert heartbeat(broker, "site-a", pki.site("site-a"), hosts=simulated).status_code == 200
    assert heartbeat(broker, "site-b", pki.site("site-b"), hosts=mixed).status_code == 200
    with broker.api() as api:
        sites = {s["name"]: s for s in api.get("/sites").json()["sites"]}
    assert sites["site-a"]["simulated"] is True, "every host is fake: its VMs run nothing"
    assert sites["site-b"]["simulated"] is False, "a real host runs VMs"
    assert sites["site-b"]["hosts"] == 2
