"""The site's link to its broker: the ``[federation]`` section and the heartbeats.

The broker is an httpx ``MockTransport`` handler here; the real broker's side
is tested in tests/broker.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from core.site_report import HeartbeatAck, HostReport, SiteReport
from site_agent.config import FederationLinkConfig
from site_agent.federation_link import HeartbeatRefused, run_heartbeats, send_heartbeat
from tests.grid_world import GridWorld


def link(**values: Any) -> FederationLinkConfig:
    base: dict[str, Any] = {
        "broker_url": "https://broker.test:8450/",
        "site_cert": "/c.pem",
        "site_key": "/k.pem",
        "public_url": "http://127.0.0.1:8440",
    }
    return FederationLinkConfig.model_validate({**base, **values})


REPORT = SiteReport(
    site="site-a",
    public_url="http://127.0.0.1:8440",
    hosts=[HostReport(name="qemu:///system", free_cpus=4, free_memory_mib=2048, tags=["ssd"])],
    cached_images=["busybox"],
)


def test_the_link_config_needs_https_to_the_broker() -> None:
    assert link().broker_url == "https://broker.test:8450"
    assert link().broker_dn is None
    dn = "/DC=org/DC=test/CN=broker.test"
    assert link(broker_dn=dn).broker_dn == dn
    with pytest.raises(ValidationError, match="must be https"):
        link(broker_url="http://broker.test")
    with pytest.raises(ValidationError, match="not an absolute"):
        link(public_url="site-a")
    with pytest.raises(ValidationError, match="interval_seconds"):
        link(interval_seconds=0)
    with pytest.raises(ValidationError, match="broker_dn"):
        link(broker_dn="")
    with pytest.raises(ValidationError, match="Extra inputs"):
        link(broker_name="typo")


async def test_a_heartbeat_posts_the_report_and_reads_the_ack() -> None:
    seen: list[httpx.Request] = []

    def broker(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"site": "site-a", "registered": True, "heartbeat_timeout_seconds": 90}
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(broker)) as client:
        ack = await send_heartbeat(client, link(), REPORT)
    assert ack == HeartbeatAck(site="site-a", registered=True, heartbeat_timeout_seconds=90)
    [request] = seen
    assert (request.method, str(request.url)) == (
        "POST",
        "https://broker.test:8450/api/v1/sites/site-a/heartbeat",
    )
    # The body is the core model, as the broker validates it.
    assert SiteReport.model_validate(json.loads(request.content)) == REPORT


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (
            httpx.Response(403, json={"error": {"code": "forbidden", "message": "unknown DN"}}),
            r"HTTP 403: unknown DN \(forbidden\)",
        ),
        (httpx.Response(502, text="bad gateway"), "HTTP 502: bad gateway"),
        (httpx.Response(200, json={"ok": True}), "not a heartbeat ack"),
        (httpx.Response(200, text="<html>"), "not a heartbeat ack"),
    ],
)
async def test_a_refused_or_strange_answer_is_heartbeat_refused(
    response: httpx.Response, message: str
) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _r: response)) as client:
        with pytest.raises(HeartbeatRefused, match=message):
            await send_heartbeat(client, link(), REPORT)


async def test_heartbeats_go_on_after_failures_and_say_when_they_recover(
    grid: GridWorld, caplog: pytest.LogCaptureFixture
) -> None:
    """Down, refusing, then accepting: the loop never stops; each change is logged once."""
    answers = [
        httpx.ConnectError("connection refused"),
        httpx.ConnectError("connection refused"),
        httpx.Response(503, json={"error": {"code": "unavailable", "message": "starting"}}),
        httpx.Response(
            200, json={"site": "site-a", "registered": False, "heartbeat_timeout_seconds": 90}
        ),
    ]
    done = asyncio.Event()
    calls = 0

    def broker(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        answer = answers[min(calls, len(answers)) - 1]
        if calls == len(answers) + 1:
            done.set()
        if isinstance(answer, Exception):
            raise answer
        return answer

    config = link(
        site_cert=grid.server.cert_path,
        site_key=grid.server.key_path,
        ca=grid.ca.cert_path,
        interval_seconds=0.01,
    )

    async def report() -> SiteReport:
        return REPORT

    caplog.set_level(logging.INFO, logger="site_agent.federation_link")
    task = asyncio.create_task(
        run_heartbeats(config, report, transport=httpx.MockTransport(broker))
    )
    await asyncio.wait_for(done.wait(), timeout=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    messages = [r.getMessage() for r in caplog.records]
    assert sum("connection refused" in m for m in messages) == 1, messages  # once, not twice
    assert sum("HTTP 503: starting" in m for m in messages) == 1, messages
    assert sum("accepted" in m for m in messages) == 1, messages  # the recovery, once


def test_tls_needs_the_site_certificate(tmp_path: Path) -> None:
    from site_agent.federation_link import tls_context

    with pytest.raises(FileNotFoundError):
        tls_context(link(site_cert=tmp_path / "missing.pem", site_key=tmp_path / "k.pem"))
