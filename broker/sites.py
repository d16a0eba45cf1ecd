"""The site registry: trusted sites, their heartbeats, availability, and how to call them.

A site is trusted when its name and certificate DN are listed in the broker
config (``[[trusted_sites]]``); it *registers* with its first heartbeat,
which tells the broker where its API is (``public_url``) and what it can
take.  Every heartbeat feeds the :class:`~federation.placement.Placer`.

Availability: a site is available while its last heartbeat is younger than
``heartbeat_timeout_seconds`` and it did not report itself unavailable.  An
unavailable site gets no new VMs, is not called by listings (its VMs show
``unknown`` with the reason), and nothing of it is deleted; its next
heartbeat makes it available again.

:class:`SiteProvider` is the federation library's
:class:`~federation.providers.peer.PeerSiteProvider` plus the operations the
broker forwards beyond create/get/list/kill (stop, reboot, console, events,
waiting, images), keeping the site's full VM resource (:class:`SiteVM`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from broker.config import BrokerConfig, TrustedSite
from broker.models import SiteRecord, SiteReport
from federation.errors import SiteFailed, SiteRefused, VMNotFound
from federation.model import HostCapacity, SiteCapacity
from federation.placement import Placer
from federation.providers.base import ComputeProvider, ProviderVM
from federation.providers.cloud import LibcloudProvider
from federation.providers.peer import PeerSiteProvider
from federation.providers.retry import RetryPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteVM(ProviderVM):
    """A VM as a site reports it: the provider view plus the site's whole JSON resource."""

    raw: Mapping[str, Any] = field(default_factory=dict)


class SiteOperationRefused(Exception):
    """The site answered a forwarded operation with a 4xx (other than 401/404)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, _Retryable)


class _Retryable(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


class SiteProvider(PeerSiteProvider):
    """A peer site for the broker: the library's provider plus forwarded operations.

    The broker authenticates with its per-site API token (``headers``); the
    site sees every VM as owned by the broker's account there, and the
    broker keeps who owns what.
    """

    def __init__(
        self,
        name: str,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        token: str,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(
            name,
            client,
            base_url=base_url,
            retry=retry,
            headers={"Authorization": f"Bearer {token}"},
        )
        self.base_url = base_url.rstrip("/")
        self._api = self.base_url + "/api/v1"
        self._auth = {"Authorization": f"Bearer {token}"}
        self._client_ref = client
        self._policy = retry or RetryPolicy()

    def _parse_vm(self, data: Any) -> ProviderVM:
        vm = super()._parse_vm(data)
        if isinstance(data, dict) and isinstance(data.get("vms"), list) and data["vms"]:
            data = data["vms"][0]
        values = {f.name: getattr(vm, f.name) for f in fields(ProviderVM)}
        return SiteVM(**values, raw=dict(data))

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        timeout: float | None = None,
        retry: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """A forwarded call under ``/api/v1``; JSON body of a 2xx answer.

        GETs are retried on connection errors, 5xx and 429; 404 is
        ``VMNotFound``, 401 and persistent failures ``SiteFailed``, other 4xx
        :class:`SiteOperationRefused`.
        """
        policy = self._policy if retry else RetryPolicy(attempts=1, initial_wait=0, max_wait=0)
        url = self._api + path
        kwargs: dict[str, Any] = {"params": dict(params or {}), "headers": {**self._auth}}
        kwargs["headers"].update(headers or {})
        if json is not None:
            kwargs["json"] = json
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            async for attempt in policy.retrying(_transient):
                with attempt:
                    response = await self._client_ref.request(method, url, **kwargs)
                    if response.status_code >= 500 or response.status_code == 429:
                        raise _Retryable(response)
        except _Retryable as exc:
            raise SiteFailed(
                self.name, f"HTTP {exc.response.status_code} after {policy.attempts} attempts"
            ) from exc
        except httpx.TimeoutException as exc:
            raise SiteFailed(self.name, f"timeout after {policy.attempts} attempts") from exc
        except httpx.TransportError as exc:
            raise SiteFailed(
                self.name, f"unreachable: {type(exc).__name__} after {policy.attempts} attempts"
            ) from exc
        status = response.status_code
        try:
            body = response.json() if response.content else None
        except ValueError as exc:
            raise SiteFailed(self.name, f"malformed answer to {method} {path}") from exc
        if status < 300:
            return body
        error = body.get("error", {}) if isinstance(body, dict) else {}
        code = str(error.get("code", "error")) if isinstance(error, dict) else "error"
        message = str(error.get("message", "")) if isinstance(error, dict) else ""
        if status == 404:
            raise VMNotFound(self.name, message or f"{path} not found")
        if status == 401:
            raise SiteFailed(self.name, f"the site rejected the broker's credentials: {message}")
        raise SiteOperationRefused(status, code, message or f"HTTP {status}")

    async def forward(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        retry: bool = True,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Any call of the site API (volumes, networks), with the errors of :meth:`_call`."""
        return await self._call(
            method, path, params=params, json=json, retry=retry, headers=headers, timeout=timeout
        )

    def _vm_path(self, provider_id: str, suffix: str = "") -> str:
        return "/vms/" + quote(provider_id, safe="") + suffix

    async def list_all(self) -> list[dict[str, Any]]:
        """Every VM the broker's account has at the site, ``done`` ones included."""
        body = await self._call("GET", "/vms")
        items = body.get("vms") if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise SiteFailed(self.name, "malformed answer: no VM list")
        return [dict(i) for i in items if isinstance(i, dict) and isinstance(i.get("id"), str)]

    async def show(
        self, provider_id: str, *, wait: str | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """The site's VM resource; with ``wait`` the site holds the answer up to ``timeout``."""
        params: dict[str, Any] = {}
        http_timeout = None
        if wait is not None:
            params = {"wait": wait, "timeout": timeout or 1.0}
            http_timeout = (timeout or 1.0) + 10.0
        body = await self._call(
            "GET", self._vm_path(provider_id), params=params, timeout=http_timeout
        )
        if not isinstance(body, dict):
            raise SiteFailed(self.name, "malformed answer: no VM")
        return body

    async def kill(self, provider_id: str, *, force: bool = False) -> dict[str, Any] | None:
        """Kill at the site; the VM as the site shows it afterwards, None if the site has none.

        ``force`` also drops a save as image in progress (the site refuses otherwise).
        """
        params = {"force": "true"} if force else None
        try:
            body = await self._call("DELETE", self._vm_path(provider_id), params=params)
        except VMNotFound:
            return None
        return body if isinstance(body, dict) else None

    async def stop(self, provider_id: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Stop at the site (``body``: the site's stop options, e.g. ``save``)."""
        body = await self._call(
            "POST", self._vm_path(provider_id, "/stop"), json=body or None, retry=False
        )
        return dict(body)

    async def reboot(self, provider_id: str) -> dict[str, Any]:
        body = await self._call("POST", self._vm_path(provider_id, "/reboot"), retry=False)
        return dict(body)

    async def console(self, provider_id: str, tail: int) -> dict[str, Any]:
        body = await self._call(
            "GET", self._vm_path(provider_id, "/console"), params={"tail": tail}
        )
        return dict(body)

    async def events(self, provider_id: str) -> list[dict[str, Any]]:
        body = await self._call("GET", self._vm_path(provider_id, "/events"))
        items = body.get("events", []) if isinstance(body, dict) else []
        return [dict(e) for e in items if isinstance(e, dict)]

    async def images(self) -> list[dict[str, Any]]:
        body = await self._call("GET", "/images")
        items = body.get("images", []) if isinstance(body, dict) else []
        return [dict(i) for i in items if isinstance(i, dict) and isinstance(i.get("name"), str)]


@dataclass
class SiteEntry:
    """What the broker knows of one trusted site."""

    trusted: TrustedSite
    report: SiteReport | None = None
    last_heartbeat: float | None = None  # seconds since the epoch
    registered_at: datetime | None = None
    provider: SiteProvider | None = None
    announced_down: bool = False

    @property
    def name(self) -> str:
        return self.trusted.name


def capacity_of(report: SiteReport, at: float) -> SiteCapacity:
    """The placer's view of a heartbeat."""
    return SiteCapacity(
        site=report.site,
        hosts=[HostCapacity(h.free_cpus, h.free_memory_mib) for h in report.hosts],
        cached_images=frozenset(report.cached_images),
        fetchable_images=(
            None if report.fetchable_images is None else frozenset(report.fetchable_images)
        ),
        free_addresses=dict(report.free_addresses),
        allowed_vos=None if report.allowed_vos is None else frozenset(report.allowed_vos),
        location=dict(report.location),
        price_per_hour=report.price_per_hour,
        available=report.available,
        last_heartbeat=at,
    )


class SiteRegistry:
    """Trusted sites, their last heartbeats and providers; the public clouds' providers.

    ``client`` is the HTTP client for calls to sites (TLS verification,
    timeouts); ``cloud_factory`` builds a provider per configured cloud
    (default: :class:`~federation.providers.cloud.LibcloudProvider`).
    """

    def __init__(
        self,
        config: BrokerConfig,
        placer: Placer,
        client: httpx.AsyncClient,
        *,
        cloud_factory: Callable[[BrokerConfig], dict[str, ComputeProvider]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.placer = placer
        self.client = client
        self.clock = clock
        self.timeout = config.broker.heartbeat_timeout_seconds
        self.retry = config.broker.retry.policy()
        self.entries: dict[str, SiteEntry] = {s.name: SiteEntry(s) for s in config.trusted_sites}
        factory = cloud_factory or default_clouds
        self.clouds: dict[str, ComputeProvider] = factory(config)
        self.cloud_configs = {c.name: c for c in config.clouds}

    # --- trust ------------------------------------------------------------------

    def trusted(self, name: str) -> TrustedSite | None:
        entry = self.entries.get(name)
        return entry.trusted if entry else None

    # --- heartbeats -------------------------------------------------------------

    def load(self, records: list[SiteRecord]) -> None:
        """Restore the last reports after a broker restart (they count from their own time)."""
        for record in records:
            entry = self.entries.get(record.name)
            if entry is None or not record.report or record.last_heartbeat is None:
                continue
            try:
                report = SiteReport.model_validate(record.report)
            except ValueError:
                log.warning("ignoring the stored report of site %s: invalid", record.name)
                continue
            self._apply(entry, report, record.last_heartbeat.timestamp())
            entry.registered_at = record.registered_at
            entry.announced_down = not self.status(record.name)[0]

    def heartbeat(self, name: str, report: SiteReport) -> tuple[bool, bool, float]:
        """Take a heartbeat of a trusted site.

        Returns ``(registered now, was announced down, the heartbeat's time)``;
        store that time with the report so that :meth:`refresh` can tell it.
        """
        entry = self.entries[name]
        registered = entry.registered_at is None
        if registered:
            entry.registered_at = datetime.now(UTC)
        was_down = entry.announced_down
        entry.announced_down = False
        at = self.clock()
        self._apply(entry, report, at)
        return registered, was_down, at

    def refresh(self, records: list[SiteRecord]) -> list[str]:
        """Take reports newer than ours from the database (heartbeats another broker
        replica received); returns the sites updated.  Our own reports are never
        re-applied, so capacity reserved since a heartbeat is kept."""
        updated = []
        for record in records:
            entry = self.entries.get(record.name)
            if entry is None or not record.report or record.last_heartbeat is None:
                continue
            at = record.last_heartbeat.timestamp()
            if entry.last_heartbeat is not None and at <= entry.last_heartbeat + 1e-3:
                continue
            try:
                report = SiteReport.model_validate(record.report)
            except ValueError:
                continue
            self._apply(entry, report, at)
            if entry.registered_at is None:
                entry.registered_at = record.registered_at
            if self.status(record.name)[0]:
                entry.announced_down = False
            updated.append(record.name)
        return updated

    def _apply(self, entry: SiteEntry, report: SiteReport, at: float) -> None:
        url = report.public_url
        if entry.provider is None or entry.provider.base_url != url:
            entry.provider = SiteProvider(
                entry.name,
                self.client,
                base_url=url,
                token=entry.trusted.api_token(),
                retry=self.retry,
            )
        entry.report = report
        entry.last_heartbeat = at
        self.placer.update(capacity_of(report, at))

    # --- status -----------------------------------------------------------------

    def status(self, name: str) -> tuple[bool, str | None]:
        """``(available, reason when not)`` of a site or cloud."""
        if name in self.clouds:
            return True, None
        entry = self.entries.get(name)
        if entry is None:
            return False, f"{name} is not a site of this federation"
        if entry.report is None or entry.last_heartbeat is None:
            return False, f"site {name} has not registered (no heartbeat received)"
        age = self.clock() - entry.last_heartbeat
        if age > self.timeout:
            last = datetime.fromtimestamp(entry.last_heartbeat, UTC).isoformat(timespec="seconds")
            return False, (
                f"site {name} missed its heartbeats: none for {age:.0f}s "
                f"(limit {self.timeout:g}s, last at {last})"
            )
        if not entry.report.available:
            return False, f"site {name} reported itself unavailable"
        return True, None

    def site_names(self) -> list[str]:
        return sorted(self.entries)

    def is_site(self, name: str) -> bool:
        return name in self.entries

    def is_cloud(self, name: str) -> bool:
        return name in self.clouds

    def site_provider(self, name: str) -> SiteProvider:
        """The provider of a registered site; ``SiteFailed`` when it never registered."""
        entry = self.entries.get(name)
        if entry is None or entry.provider is None:
            raise SiteFailed(name, "the site has not registered (no heartbeat received)")
        return entry.provider

    def cloud_provider(self, name: str) -> ComputeProvider:
        provider = self.clouds.get(name)
        if provider is None:
            raise SiteRefused(name, "no such public cloud")
        return provider

    def newly_down(self) -> list[tuple[str, str]]:
        """Sites that became unavailable since last asked, with the reason (each reported once)."""
        out = []
        for entry in self.entries.values():
            if entry.report is None or entry.announced_down:
                continue
            available, reason = self.status(entry.name)
            if not available:
                entry.announced_down = True
                out.append((entry.name, reason or "unavailable"))
        return out

    def available_sites(self) -> list[str]:
        return [name for name in sorted(self.entries) if self.status(name)[0]]

    async def aclose(self) -> None:
        for provider in self.clouds.values():
            await provider.aclose()


def default_clouds(config: BrokerConfig) -> dict[str, ComputeProvider]:
    """A :class:`LibcloudProvider` per ``[[clouds]]`` entry."""
    retry = config.broker.retry.policy()
    return {
        c.name: LibcloudProvider(
            c.public_cloud(), retry=retry, timeout=config.broker.site_timeout_seconds
        )
        for c in config.clouds
    }
