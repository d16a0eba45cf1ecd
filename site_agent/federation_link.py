"""The site's link to a federation broker: registration and heartbeats over mutual TLS.

A site joins a federation by sending heartbeats to the broker
(``POST {broker_url}/api/v1/sites/{name}/heartbeat``) over HTTPS with its
site certificate; the broker checks the certificate's DN against its
allow-list.  The first heartbeat registers the site; each one reports what
the broker's placement needs: free CPUs and RAM of every hypervisor host,
the images the site can boot, free addresses per network type, the price,
location tags and allowed VOs, and where the site's API is (``public_url``).
A site whose heartbeats stop is marked unavailable by the broker (nothing is
deleted); the next heartbeat brings it back.

Configuration (``[federation]`` in the site config, :class:`FederationLinkConfig`)::

    [federation]
    broker_url = "https://broker.example.org:8450"
    site_cert = "/etc/grid-security/site-a/hostcert.pem"
    site_key = "/etc/grid-security/site-a/hostkey.pem"
    ca = "/etc/grid-security/certificates"     # CA file or directory for the broker's cert
    public_url = "https://site-a.example.org:8440"
    interval_seconds = 30
    price_per_hour = 0.01
    location = { country = "FR" }

Wiring in the site agent's start-up (``cleanup_ctx``, after the VM manager)::

    if config.federation is not None:
        from site_agent.federation_link import run_heartbeats, site_capacity
        background.append(asyncio.create_task(
            run_heartbeats(config.federation, lambda: site_capacity(app))))

Until that wiring exists, ``python -m site_agent.federation_link --config
site.toml`` runs a site agent with its heartbeats (the ``[federation]``
section is read from the same file).

This module imports nothing of the site agent at import time (the site
config may import :class:`FederationLinkConfig` from here).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import httpx
from pydantic import Field, field_validator

from core.config import StrictModel

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

Capacity = Callable[[], Awaitable[dict[str, Any]]]


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an absolute http(s) URL")
    return value.rstrip("/")


class FederationLinkConfig(StrictModel):
    """``[federation]``: how this site reaches its broker, and what it tells it."""

    broker_url: str
    site_cert: Path
    site_key: Path
    ca: Path | None = None  # CA file or hashed directory for the broker's certificate
    public_url: str
    interval_seconds: float = Field(default=30.0, gt=0)
    timeout_seconds: float = Field(default=10.0, gt=0)
    price_per_hour: float = Field(default=0.0, ge=0)
    location: dict[str, str] = Field(default_factory=dict)
    allowed_vos: list[str] | None = None

    @field_validator("public_url")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return _url(value)

    @field_validator("broker_url")
    @classmethod
    def _https(cls, value: str) -> str:
        if urlsplit(value).scheme != "https":
            raise ValueError("broker_url must be https: sites register over mutual TLS")
        return _url(value)


class HeartbeatRefused(Exception):
    """The broker answered a heartbeat with an error (untrusted certificate, bad report)."""


def tls_context(config: FederationLinkConfig) -> ssl.SSLContext:
    """Client TLS: the site certificate, and the CAs that may sign the broker's certificate."""
    if config.ca is None:
        context = ssl.create_default_context()
    elif config.ca.is_dir():
        context = ssl.create_default_context(capath=str(config.ca))
    else:
        context = ssl.create_default_context(cafile=str(config.ca))
    context.load_cert_chain(str(config.site_cert), str(config.site_key))
    return context


def heartbeat_body(config: FederationLinkConfig, capacity: dict[str, Any]) -> dict[str, Any]:
    """The report sent to the broker: the capacity plus what the config says of the site."""
    body = dict(capacity)
    body["public_url"] = config.public_url
    body["price_per_hour"] = config.price_per_hour
    body["location"] = dict(config.location)
    body["allowed_vos"] = config.allowed_vos
    return body


async def send_heartbeat(
    client: httpx.AsyncClient, config: FederationLinkConfig, capacity: dict[str, Any]
) -> dict[str, Any]:
    """Send one heartbeat; the broker's answer, or ``HeartbeatRefused`` / ``httpx.HTTPError``."""
    site = str(capacity["site"])
    url = f"{config.broker_url}/api/v1/sites/{quote(site, safe='')}/heartbeat"
    response = await client.post(url, json=heartbeat_body(config, capacity))
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            text = f"{error.get('message')} ({error.get('code')})"
        except (ValueError, KeyError, TypeError):
            text = response.text[:200]
        raise HeartbeatRefused(f"broker answered HTTP {response.status_code}: {text}")
    answer: dict[str, Any] = response.json()
    return answer


async def run_heartbeats(
    config: FederationLinkConfig,
    capacity: Capacity,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> None:
    """Send a heartbeat now and every ``interval_seconds``, until cancelled.

    Failures (broker unreachable or refusing, capacity not computable) are
    logged when they start and when they end, and never stop the loop.
    """
    failing: str | None = None
    async with httpx.AsyncClient(
        verify=tls_context(config), timeout=config.timeout_seconds, transport=transport
    ) as client:
        while True:
            try:
                answer = await send_heartbeat(client, config, await capacity())
            except (httpx.HTTPError, HeartbeatRefused, OSError, ValueError, KeyError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
                if problem != failing:
                    log.warning("heartbeat to %s failed: %s", config.broker_url, problem)
                failing = problem
            else:
                if failing is not None or answer.get("registered"):
                    log.info(
                        "heartbeats to %s accepted%s",
                        config.broker_url,
                        " (site registered)" if answer.get("registered") else "",
                    )
                failing = None
            await asyncio.sleep(config.interval_seconds)


async def site_capacity(app: web.Application) -> dict[str, Any]:
    """The site's capacity now, from its hosts, image cache and address pools.

    Free CPUs and RAM per reachable host are the figures the site's own host
    placement uses (overcommit and reserved memory applied, VMs not yet
    terminal counted).  ``cached_images``: public images a VM can boot at
    once (configured or in the cache); ``fetchable_images``: public images
    registered but not cached yet (fetched on first use).  ``free_addresses``:
    free leases per pool type.  Only public images count: the broker's
    account at the site sees no one's private images.
    """
    from auth.principal import Principal
    from site_agent.api.keys import CONFIG, HOSTS, IMAGES, NETWORKS, VM_MANAGER

    usage = await app[VM_MANAGER].usage()
    hosts = [
        {
            "name": load.uri,
            "free_cpus": max(0, int(load.cpus - load.used_cpus)),
            "free_memory_mib": max(0, int(load.memory_mib - load.used_memory_mib)),
        }
        for load in app[HOSTS].loads(usage)
    ]
    viewer = Principal(account="federation", identity="federation heartbeat", method="token")
    images = [i for i in await app[IMAGES].list_for(viewer) if i.public]
    free: dict[str, int] = {}
    networks = app.get(NETWORKS)
    if networks is not None:
        for pool in await networks.summaries():
            free[pool.type] = free.get(pool.type, 0) + pool.free
    return {
        "site": app[CONFIG].site.name,
        "hosts": hosts,
        "cached_images": sorted(i.name for i in images if i.available and i.state == "ready"),
        "fetchable_images": sorted(i.name for i in images if i.state == "pending"),
        "free_addresses": free,
        "available": bool(hosts),
    }
