"""The registry: trusted sites, their heartbeats and availability, and every provider.

A site is trusted when its name and certificate DN are listed in the broker
config (``[[trusted_sites]]``); it *registers* with its first heartbeat,
which tells the broker where its API is (``public_url``) and what it can
take. Every heartbeat feeds the :class:`~federation.placement.Placer`.

Availability: a site is available while its last heartbeat is younger than
``heartbeat_timeout_seconds`` and it did not report itself unavailable. An
unavailable site gets no new VMs, is not called by listings (its resources
show ``unknown`` with the reason), and nothing of it is deleted; its next
heartbeat makes it available again. Public clouds are always available (they
are not health-checked).

Providers: :meth:`SiteRegistry.provider` gives the
:class:`~federation.providers.base.ComputeProvider` of a site (made by the
``site_factory`` from the URL its heartbeat gave: a
:class:`~federation.providers.peer.PeerSiteProvider` over the shared site
API client) or of a public cloud. Callers use only the contract: they never
ask which kind they hold.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from broker.config import BrokerConfig, TrustedSite
from broker.errors import InvalidReport, SiteUnreachable, UnknownSite
from broker.sites.store import StoredReport
from core.site_report import SiteReport
from federation.capacity import capacity_from_report
from federation.placement import Placer
from federation.providers.base import ComputeProvider

log = logging.getLogger(__name__)

#: ``(site name, base URL, the broker's token at the site) -> provider``.
SiteFactory = Callable[[str, str, str], ComputeProvider]


@dataclass
class SiteEntry:
    """What the broker knows of one trusted site."""

    trusted: TrustedSite
    report: SiteReport | None = None
    last_heartbeat: float | None = None  # seconds since the epoch
    registered_at: datetime | None = None
    provider: ComputeProvider | None = None
    url: str | None = None
    announced_down: bool = False

    @property
    def name(self) -> str:
        return self.trusted.name


class SiteRegistry:
    """Trusted sites, their last heartbeats and providers; the public clouds' providers."""

    def __init__(
        self,
        config: BrokerConfig,
        placer: Placer,
        *,
        site_factory: SiteFactory,
        clouds: Mapping[str, ComputeProvider],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.placer = placer
        self.site_factory = site_factory
        self.clock = clock
        self.timeout = config.broker.heartbeat_timeout_seconds
        self.entries: dict[str, SiteEntry] = {s.name: SiteEntry(s) for s in config.trusted_sites}
        self.clouds: dict[str, ComputeProvider] = dict(clouds)

    # --- trust and names ----------------------------------------------------------

    def trusted(self, name: str) -> TrustedSite | None:
        entry = self.entries.get(name)
        return entry.trusted if entry else None

    def site_names(self) -> list[str]:
        return sorted(self.entries)

    def cloud_names(self) -> list[str]:
        return sorted(self.clouds)

    def is_site(self, name: str) -> bool:
        return name in self.entries

    def is_cloud(self, name: str) -> bool:
        return name in self.clouds

    def check_site(self, name: str, *, what: str = "") -> None:
        """``UnknownSite`` (404) unless ``name`` is a trusted site (clouds named as such)."""
        if name in self.entries:
            return
        hint = " (a public cloud: clouds are used only by bursting)" if name in self.clouds else ""
        raise UnknownSite(
            f"unknown site {name!r}{hint}{what}",
            details={"site": name, "known": self.site_names()},
        )

    # --- heartbeats ---------------------------------------------------------------

    def load(self, stored: list[StoredReport]) -> None:
        """Restore the last reports after a broker restart (they count from their own time)."""
        for record in stored:
            entry = self.entries.get(record.name)
            report = self._valid(record)
            if entry is None or report is None or record.last_heartbeat is None:
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
        try:  # checked before anything changes
            capacity_from_report(report)
        except ValueError as exc:
            raise InvalidReport(f"site {name}: the report is not usable: {exc}") from exc
        registered = entry.registered_at is None
        if registered:
            entry.registered_at = datetime.now(UTC)
        was_down = entry.announced_down
        entry.announced_down = False
        at = self.clock()
        self._apply(entry, report, at)
        return registered, was_down, at

    def refresh(self, stored: list[StoredReport]) -> list[str]:
        """Take reports newer than ours from the database (heartbeats another broker
        replica received); returns the sites updated. Our own reports are never
        re-applied, so capacity reserved since a heartbeat is kept."""
        updated = []
        for record in stored:
            entry = self.entries.get(record.name)
            if entry is None or record.last_heartbeat is None:
                continue
            at = record.last_heartbeat.timestamp()
            if entry.last_heartbeat is not None and at <= entry.last_heartbeat + 1e-3:
                continue
            report = self._valid(record)
            if report is None:
                continue
            self._apply(entry, report, at)
            if entry.registered_at is None:
                entry.registered_at = record.registered_at
            if self.status(record.name)[0]:
                entry.announced_down = False
            updated.append(record.name)
        return updated

    @staticmethod
    def _valid(record: StoredReport) -> SiteReport | None:
        if not record.report:
            return None
        try:
            report = SiteReport.model_validate(record.report)
            capacity_from_report(report)
            return report
        except ValueError:
            log.warning("ignoring the stored report of site %s: invalid", record.name)
            return None

    def _apply(self, entry: SiteEntry, report: SiteReport, at: float) -> None:
        if entry.provider is None or entry.url != report.public_url:
            entry.provider = self.site_factory(
                entry.name, report.public_url, entry.trusted.api_token()
            )
            entry.url = report.public_url
        capacity = capacity_from_report(report, at=at)
        entry.report = report
        entry.last_heartbeat = at
        self.placer.update(capacity)

    # --- status -------------------------------------------------------------------

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

    def report(self, name: str) -> SiteReport | None:
        """The site's last heartbeat (None for clouds and sites that never registered)."""
        entry = self.entries.get(name)
        return entry.report if entry else None

    def last_heartbeat(self, name: str) -> float | None:
        entry = self.entries.get(name)
        return entry.last_heartbeat if entry else None

    def available_sites(self) -> list[str]:
        return [name for name in sorted(self.entries) if self.status(name)[0]]

    def available(self) -> list[str]:
        """Every provider that can be called now: available sites, then the clouds."""
        return [*self.available_sites(), *self.cloud_names()]

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

    # --- providers ----------------------------------------------------------------

    def provider(self, name: str) -> ComputeProvider:
        """The provider of site or cloud ``name`` (whatever its state).

        ``UnknownSite`` for a name that is neither; ``SiteUnreachable`` for a
        trusted site that never registered (the broker does not know its URL).
        """
        cloud = self.clouds.get(name)
        if cloud is not None:
            return cloud
        entry = self.entries.get(name)
        if entry is None:
            raise UnknownSite(f"unknown site {name!r}", details={"known": self.site_names()})
        if entry.provider is None:
            raise SiteUnreachable(f"site {name} has not registered (no heartbeat received)")
        return entry.provider

    def usable(self, name: str, what: str) -> ComputeProvider:
        """The provider of ``name`` if it is available now; else ``SiteUnreachable``
        (503) saying why it cannot ``what``."""
        available, reason = self.status(name)
        if not available:
            raise SiteUnreachable(f"cannot {what}: {reason}")
        return self.provider(name)

    async def aclose(self) -> None:
        for provider in self.clouds.values():
            await provider.aclose()
        for entry in self.entries.values():
            if entry.provider is not None:
                await entry.provider.aclose()
