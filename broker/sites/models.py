"""Sites: the ``broker_sites`` table and the ``/sites`` and ``/health`` shapes.

The heartbeat itself is :class:`core.site_report.SiteReport`, the one model
the site sends and the broker validates.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from pydantic import Field as PydField
from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from core.db import UTCDateTime, utcnow


class ProviderKind(StrEnum):
    """Where a VM runs, as shown to users: a peer site or a public cloud (display only)."""

    SITE = "site"
    CLOUD = "cloud"


class SiteRecord(SQLModel, table=True):
    """A registered site: where its API is and its last capacity report."""

    __tablename__ = "broker_sites"

    name: str = Field(primary_key=True)
    dn: str
    url: str | None = None
    report: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    registered_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_heartbeat: datetime | None = Field(default=None, sa_type=UTCDateTime)
    heartbeats: int = 0


class SitePublic(BaseModel):
    """A site or public cloud of the federation, as users see it."""

    name: str
    kind: ProviderKind
    status: str = PydField(description="available, unavailable, or never-registered (sites)")
    reason: str | None = None
    simulated: bool = PydField(
        default=False,
        description="its VMs run nothing: every host of the site is simulated (fake://)",
    )
    url: str | None = None
    last_heartbeat: datetime | None = None
    hosts: int = 0
    free_cpus: int = 0
    free_memory_mib: int = 0
    largest_free_cpus: int = 0
    largest_free_memory_mib: int = 0
    cached_images: list[str] = PydField(default_factory=list)
    networks: list[str] = PydField(default_factory=list, description="its address pools")
    host_tags: list[str] = PydField(default_factory=list, description="tags of its hosts")
    location: dict[str, str] = PydField(default_factory=dict)
    price_per_hour: float | None = None
    vms: int = PydField(default=0, description="the broker's active VMs there")


class SiteList(BaseModel):
    sites: list[SitePublic]


class Health(BaseModel):
    status: str
    broker: str
    version: str
    sites_available: int
    sites_known: int
