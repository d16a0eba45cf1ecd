"""Leases (table ``network_leases``) and the API shapes of networks.

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


class LeasePublic(SQLModel):
    address: str
    mac: str
    vm_id: str
    owner: str
    created_at: datetime


class NetworkPublic(SQLModel):
    """A pool as the API shows it."""

    name: str
    type: str
    cidr: str
    gateway: str | None
    dns: list[str]
    default: bool
    size: int
    leased: int
    free: int


class NetworkList(SQLModel):
    networks: list[NetworkPublic]


class NetworkDetail(NetworkPublic):
    """A pool with its range and leases (admins: every lease; users: their own)."""

    range_start: str
    range_end: str
    fixed: list[str]
    leases: list[LeasePublic]
