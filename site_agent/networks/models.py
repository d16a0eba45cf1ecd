"""Leases (table ``network_leases``); the API shapes are in :mod:`core.resources.networks`.

A lease ties one address of a pool and one MAC to a VM from its create until
it is ``done`` or ``failed``; then the row is deleted (the VM row keeps the
address it had, for the record). Unique constraints make an address leased
at most once per pool and a MAC at most once per site.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from core.db import UTCDateTime, utcnow


class Lease(SQLModel, table=True):
    """One address and MAC leased to a VM."""

    __tablename__ = "network_leases"
    __table_args__ = (UniqueConstraint("pool", "address"), UniqueConstraint("mac"))

    id: int | None = Field(default=None, primary_key=True)
    pool: str = Field(index=True)
    address: str
    mac: str
    vm_id: str = Field(index=True, foreign_key="vms.id")
    owner: str = Field(index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
