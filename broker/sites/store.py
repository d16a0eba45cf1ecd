"""The ``broker_sites`` table: registered sites and their last heartbeat.

Plain synchronous functions (the services run them in threads); the table
never leaves this module: readers get :class:`StoredReport` values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from broker.sites.models import SiteRecord
from core.db import session_scope


@dataclass(frozen=True)
class StoredReport:
    """A site's last heartbeat as stored (the report as JSON, validated by the registry)."""

    name: str
    report: dict[str, Any]
    registered_at: datetime
    last_heartbeat: datetime | None


class SiteStore:
    """Reads and writes of ``broker_sites``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def save_heartbeat(
        self, name: str, dn: str, url: str, report: dict[str, Any], at: datetime
    ) -> bool:
        """Record a site's heartbeat; True when this one registered the site."""
        with session_scope(self.engine) as session:
            record = session.get(SiteRecord, name)
            registered = record is None
            if record is None:
                record = SiteRecord(name=name, dn=dn, registered_at=at)
            record.dn = dn
            record.url = url
            record.report = report
            record.last_heartbeat = at
            record.heartbeats += 1
            session.add(record)
        return registered

    def reports(self) -> list[StoredReport]:
        """Every site's last stored heartbeat, by name."""
        with Session(self.engine) as session:
            rows = session.exec(select(SiteRecord).order_by(col(SiteRecord.name))).all()
            return [
                StoredReport(r.name, dict(r.report), r.registered_at, r.last_heartbeat)
                for r in rows
            ]
