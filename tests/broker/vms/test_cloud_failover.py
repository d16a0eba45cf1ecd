"""A public cloud that keeps failing is retried, then skipped for the next cloud.

Two clouds in the broker config: ``broken-ec2`` (the cheapest, so tried
first) is a small HTTP server on loopback answering every EC2 call with
HTTP 500 or a throttling ``RequestLimitExceeded``; ``moto-ec2`` is
``moto_server``.  A request no site can take bursts to moto after the
broken cloud's retries.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.broker.fedenv import Federation, SiteSpec, fake_hosts, tiny_image_toml
from tests.broker.vms.test_bursting import MOTO_AMI, cloud_toml
from tests.helpers import free_port

THROTTLED = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
    "<Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
    "</Error></Errors><RequestID>r-1</RequestID></Response>"
)
ANSWERS = {
    "500": (500, "Internal Server Error", "text/plain"),
    "throttled": (503, THROTTLED, "text/xml"),
}


class FailingEc2:
    """An 'EC2 endpoint' on 127.0.0.1 that fails every request the same way (counted)."""

    def __init__(self, answer: tuple[int, str, str]) -> None:
        self.requests = 0
        self.port = free_port()
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _fail(self) -> None:
                endpoint.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                status, text, ctype = answer
                payload = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _fail

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture(params=sorted(ANSWERS))
def failing_ec2(request: pytest.FixtureRequest) -> Iterator[FailingEc2]:
    endpoint = FailingEc2(ANSWERS[request.param])
    yield endpoint
    endpoint.close()


def broken_cloud_toml(port: int) -> str:
    return f"""
[[clouds]]
name = "broken-ec2"
driver = "ec2"
key = "AKIDTESTING"
secret = "testing"
region = "us-east-1"
host = "127.0.0.1"
port = {port}
secure = false
images = {{ tiny = "{MOTO_AMI}" }}

[clouds.sizes."m1.small"]
size_id = "t2.micro"
vcpus = 1
memory_mib = 1024
price_per_hour = 0.001
"""


def test_a_failing_cloud_is_retried_then_skipped_for_the_next(
    federation: Federation, tiny_image: Path, moto: str, failing_ec2: FailingEc2
) -> None:
    federation.start_broker(
        ["site-a"], extra=broken_cloud_toml(failing_ec2.port) + cloud_toml(moto)
    )
    federation.start_site(SiteSpec("site-a", fake_hosts(1), tiny_image_toml(tiny_image)))
    federation.wait_sites(["site-a"])
    with federation.api() as api:
        assert api.post("/vms", json={"image": "tiny"}).json()["vms"][0]["site"] == "site-a"
        before = failing_ec2.requests
        response = api.post("/vms", json={"image": "tiny", "name": "burst"})
        assert response.status_code == 202, response.text
        burst = response.json()["vms"][0]
        assert burst["site"] == "moto-ec2" and burst["kind"] == "cloud"
        assert failing_ec2.requests - before >= 3, "the broken cloud was retried (3 attempts)"
        reasons = [e["reason"] for e in api.get(f"/vms/{burst['id']}/events").json()["events"]]
        failed = [r for r in reasons if "broken-ec2" in r and "failed" in r]
        assert failed, reasons
        assert any(r.startswith("burst to public cloud moto-ec2") for r in reasons)
        assert api.delete(f"/vms/{burst['id']}").json()["state"] == "done"
