"""Cloud bursting to ``moto_server`` (EC2 API on loopback) through libcloud.

Bursting happens only when no site can place the request, only for allowed
users, within the budget, and never for confidential, site-pinned or
opted-out requests.  moto's instance addresses are made up: they are data
only and nothing here connects to them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from federation.providers.cloud import NamespaceTolerantEC2NodeDriver
from tests.broker.fedenv import Federation, SiteSpec, fake_hosts, tiny_image_toml

MOTO_AMI = "ami-03cf127a"


def cloud_toml(moto: str, *, budget: float = 0.03) -> str:
    host, port = moto.removeprefix("http://").split(":")
    return f"""
[[clouds]]
name = "moto-ec2"
driver = "ec2"
key = "AKIDTESTING"
secret = "testing"
region = "us-east-1"
host = "{host}"
port = {port}
secure = false
images = {{ tiny = "{MOTO_AMI}" }}

[clouds.sizes."m1.small"]
size_id = "t2.micro"
vcpus = 1
memory_mib = 1024
price_per_hour = 0.0116

[bursting]
allowed_users = ["alice"]
budget_per_period = {budget}
default_hours = 1
"""


def moto_instances(moto: str) -> dict[str, tuple[str, dict[str, str]]]:
    """Instance id -> (EC2 state, tags) of everything moto holds (asked of moto only)."""
    host, port = moto.removeprefix("http://").split(":")
    driver = NamespaceTolerantEC2NodeDriver(
        "AKIDTESTING", "testing", host=host, port=int(port), secure=False, signature_version="4"
    )
    return {str(n.id): (n.extra["status"], n.extra["tags"]) for n in driver.list_nodes()}


def start(federation: Federation, tiny_image: Path, moto: str, **options: Any) -> None:
    federation.start_broker(["site-a"], extra=cloud_toml(moto, **options))
    federation.start_site(SiteSpec("site-a", fake_hosts(1), tiny_image_toml(tiny_image)))
    federation.wait_sites(["site-a"])


def test_a_request_no_site_can_take_bursts_to_the_cloud_and_can_be_killed(
    federation: Federation, tiny_image: Path, moto: str
) -> None:
    start(federation, tiny_image, moto)
    with federation.api() as api:
        on_site = api.post("/vms", json={"image": "tiny", "name": "local"}).json()["vms"][0]
        assert on_site["site"] == "site-a", "a site that can place it is always preferred"
        response = api.post("/vms", json={"image": "tiny", "name": "burst"})
        assert response.status_code == 202, response.text
        burst = response.json()["vms"][0]
        assert burst["site"] == "moto-ec2" and burst["kind"] == "cloud"
        assert burst["site_vm_id"].startswith("i-")
        assert burst["price_per_hour"] == 0.0116
        reasons = [e["reason"] for e in api.get(f"/vms/{burst['id']}/events").json()["events"]]
        assert any(r.startswith("no site can place the request: site-a") for r in reasons)
        assert any(
            r.startswith("burst policy: burst: no site can place the request") for r in reasons
        )
        assert any(r.startswith("burst to public cloud moto-ec2") for r in reasons)

        instances = moto_instances(moto)
        assert list(instances) == [burst["site_vm_id"]]
        state, tags = instances[burst["site_vm_id"]]
        assert state in ("pending", "running") and tags["stratus-vm-id"] == burst["id"]

        listing = api.get("/vms").json()
        assert not listing["partial"]
        sites = {v["name"]: (v["site"], v["state"]) for v in listing["vms"]}
        assert sites["burst"][0] == "moto-ec2" and sites["burst"][1] in ("pending", "running")
        assert sites["local"][0] == "site-a"
        clouds = [s for s in api.get("/sites").json()["sites"] if s["kind"] == "cloud"]
        assert [(c["name"], c["vms"]) for c in clouds] == [("moto-ec2", 1)]
        # What the cloud offers is forwarded (console); what it does not is 409 not_supported.
        console = api.get(f"/vms/{burst['id']}/console")
        assert console.status_code == 200 and console.json()["vm_id"] == burst["id"]
        disks = api.get(f"/vms/{burst['id']}/disks")
        assert disks.status_code == 409 and disks.json()["error"]["code"] == "not_supported"
        assert "moto-ec2" in disks.json()["error"]["message"]
        killed = api.delete(f"/vms/{burst['id']}")
        assert killed.status_code == 200 and killed.json()["state"] == "done"
        assert moto_instances(moto)[burst["site_vm_id"]][0] in ("shutting-down", "terminated")
        assert api.get(f"/vms/{burst['id']}").json()["state"] == "done"


def test_bursting_is_refused_by_policy_and_budget(
    federation: Federation, tiny_image: Path, moto: str
) -> None:
    start(federation, tiny_image, moto, budget=0.02)
    with federation.api() as api:
        assert api.post("/vms", json={"image": "tiny"}).json()["vms"][0]["site"] == "site-a"

        def refusal(user: str = "alice", **body: Any) -> str:
            with federation.api(user) as as_user:
                response = as_user.post("/vms", json={"image": "tiny", **body})
            assert response.status_code == 409, response.text
            error = response.json()["error"]
            assert error["details"]["sites"]["site-a"].startswith("no host with 1 free CPUs")
            reason: str = error["details"]["burst"]["reason"]
            return reason

        assert "neither user bob" in refusal("bob")
        assert "confidential" in refusal(confidential=True)
        assert "pinned to sites [site-a]" in refusal(site="site-a")
        assert "pinned to sites" in refusal(constraints=["site in [site-a]"])
        assert "opted out" in refusal(allow_burst=False)

        first = api.post("/vms", json={"image": "tiny"}).json()["vms"][0]
        assert first["site"] == "moto-ec2"  # 0.0116 of the 0.02 budget
        assert "budget exhausted" in refusal()
    assert len(moto_instances(moto)) == 1, "refused requests made nothing at the cloud"
