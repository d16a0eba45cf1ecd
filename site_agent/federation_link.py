"""The site's heartbeats to its federation broker, over mutual TLS.

A site joins a federation by sending heartbeats to the broker
(``POST {broker_url}/api/v1/sites/{name}/heartbeat``) over HTTPS with its
site certificate; the broker checks the certificate's DN against its
allow-list. The first heartbeat registers the site; each one carries a
:class:`core.site_report.SiteReport` (built by ``site_agent.capacity``: free
capacity per host, images, address pools, price, location, VOs, the site's
public URL), and the broker answers with a :class:`core.site_report.HeartbeatAck`.
A site whose heartbeats stop is marked unavailable by the broker (nothing is
deleted); the next heartbeat brings it back.

The site agent runs :func:`run_heartbeats` as a background task whenever its
configuration has a ``[federation]`` section (``site_agent.app``);
configuration reference: ``docs/configuration.md``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from core.site_report import HeartbeatAck, SiteReport
from site_agent.config import FederationLinkConfig
from site_agent.errors import SiteAgentError

log = logging.getLogger(__name__)

#: The site's report now (``site_agent.capacity.CapacityReport.report``).
Report = Callable[[], Awaitable[SiteReport]]


class HeartbeatRefused(SiteAgentError):
    """The broker answered a heartbeat with an error, or with something that is not an ack."""


def tls_context(link: FederationLinkConfig) -> ssl.SSLContext:
    """Client TLS: the site certificate, and the CAs that may sign the broker's certificate."""
    if link.ca is None:
        context = ssl.create_default_context()
    elif link.ca.is_dir():
        context = ssl.create_default_context(capath=str(link.ca))
    else:
        context = ssl.create_default_context(cafile=str(link.ca))
    context.load_cert_chain(str(link.site_cert), str(link.site_key))
    return context


async def send_heartbeat(
    client: httpx.AsyncClient, link: FederationLinkConfig, report: SiteReport
) -> HeartbeatAck:
    """Send one heartbeat; the broker's ack, or ``HeartbeatRefused`` / ``httpx.HTTPError``."""
    url = f"{link.broker_url}/api/v1/sites/{quote(report.site, safe='')}/heartbeat"
    response = await client.post(url, json=report.model_dump(mode="json"))
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            text = f"{error.get('message')} ({error.get('code')})"
        except (ValueError, KeyError, TypeError):
            text = response.text[:200]
        raise HeartbeatRefused(f"broker answered HTTP {response.status_code}: {text}")
    try:
        return HeartbeatAck.model_validate_json(response.content)
    except ValidationError as exc:
        raise HeartbeatRefused(f"the broker's answer is not a heartbeat ack: {exc}") from exc


async def run_heartbeats(
    link: FederationLinkConfig,
    report: Report,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> None:
    """Send a heartbeat now and every ``interval_seconds``, until cancelled.

    Failures (broker unreachable or refusing, report not computable) are
    logged when they start and when they end, and never stop the loop.
    ``transport`` replaces the network (tests).
    """
    failing: str | None = None
    async with httpx.AsyncClient(
        verify=tls_context(link), timeout=link.timeout_seconds, transport=transport
    ) as client:
        while True:
            try:
                ack = await send_heartbeat(client, link, await report())
            except (httpx.HTTPError, SiteAgentError, OSError, ValidationError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
                if problem != failing:
                    log.warning("heartbeat to %s failed: %s", link.broker_url, problem)
                failing = problem
            else:
                if failing is not None or ack.registered:
                    log.info(
                        "heartbeats to %s accepted%s",
                        link.broker_url,
                        " (site registered)" if ack.registered else "",
                    )
                failing = None
            await asyncio.sleep(link.interval_seconds)
