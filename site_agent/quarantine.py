"""Quarantine: a killed VM's files are kept for a configured period, then deleted.

Kept for forensics after security incidents (REFERENCE.md). ``put`` moves
the VM's directory under ``state_dir/quarantine/`` and records its expiry;
a background sweeper deletes expired entries. Entries survive agent
restarts (they are rows in the site database).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Field, SQLModel, col, select

from core.db import UTCDateTime, session_scope, utcnow
from site_agent.layout import StateLayout

log = logging.getLogger(__name__)


class QuarantineEntry(SQLModel, table=True):
    __tablename__ = "quarantine"

    vm_id: str = Field(primary_key=True)
    owner: str
    path: str
    quarantined_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(index=True, sa_type=UTCDateTime)


class QuarantineEntryPublic(SQLModel):
    vm_id: str
    owner: str
    quarantined_at: datetime
    expires_at: datetime


class QuarantineList(SQLModel):
    entries: list[QuarantineEntryPublic]


class Quarantine:
    """Moves VM directories into quarantine and deletes them when they expire."""

    def __init__(self, engine: Engine, layout: StateLayout, period_seconds: float) -> None:
        self.engine = engine
        self.layout = layout
        self.period = timedelta(seconds=period_seconds)

    def put(self, vm_id: str, owner: str) -> datetime | None:
        """Quarantine ``vm_id``'s directory; returns its expiry, None if it had no files.

        Idempotent: a VM already in quarantine keeps its first expiry.
        """
        source = self.layout.vm_dir(vm_id)
        target = self.layout.quarantine_dir / vm_id
        with session_scope(self.engine) as session:
            existing = session.get(QuarantineEntry, vm_id)
            if existing is not None:
                return existing.expires_at
            if not source.exists():
                return None
            shutil.move(str(source), str(target))
            expires = utcnow() + self.period
            session.add(
                QuarantineEntry(vm_id=vm_id, owner=owner, path=str(target), expires_at=expires)
            )
            return expires

    def entries(self) -> list[QuarantineEntry]:
        with session_scope(self.engine) as session:
            return list(
                session.exec(
                    select(QuarantineEntry).order_by(col(QuarantineEntry.expires_at))
                ).all()
            )

    async def list_public(self) -> list[QuarantineEntryPublic]:
        """Every entry as the API shows it, soonest expiry first (without blocking the loop)."""
        entries = await asyncio.to_thread(self.entries)
        return [
            QuarantineEntryPublic(
                vm_id=e.vm_id,
                owner=e.owner,
                quarantined_at=e.quarantined_at,
                expires_at=e.expires_at,
            )
            for e in entries
        ]

    def sweep(self, now: datetime | None = None) -> list[str]:
        """Delete every expired entry's files and row; returns the VM ids deleted."""
        now = now or utcnow()
        deleted = []
        with session_scope(self.engine) as session:
            expired = session.exec(
                select(QuarantineEntry).where(col(QuarantineEntry.expires_at) <= now)
            ).all()
            for entry in expired:
                path = Path(entry.path)
                # Only ever delete inside our own quarantine directory.
                if path.parent == self.layout.quarantine_dir:
                    shutil.rmtree(path, ignore_errors=True)
                session.delete(entry)
                deleted.append(entry.vm_id)
        for vm_id in deleted:
            log.info("quarantine expired for VM %s: files deleted", vm_id)
        return deleted

    async def run_sweeper(self, interval: float) -> None:
        """Sweep every ``interval`` seconds until cancelled."""
        while True:
            try:
                await asyncio.to_thread(self.sweep)
            except Exception:
                log.exception("quarantine sweep failed; will retry")
            await asyncio.sleep(interval)
