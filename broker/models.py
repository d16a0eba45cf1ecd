"""The broker's persistence (``broker_*`` tables) and API shapes.

Tables never leave :mod:`broker.store`; handlers answer with the ``*Public``
models.  The VM resource is the site agent's (same fields, same meaning)
plus where it runs: ``site`` (a site or a public cloud name), ``kind``,
``site_vm_id`` and, for queued requests, ``queue_position`` and ``deadline``.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic import Field as PydField
from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from core.db import UTCDateTime, utcnow
from core.vm_request import VmRequestBase
from federation.model import NetworkType

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
SITE_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
CONTEXT_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_USER_DATA = 16 * 1024


class BrokerVmState(StrEnum):
    """A VM's state as the broker shows it: the site states plus the broker's own.

    ``queued``: waiting in the deferred queue for capacity; ``expired``: its
    queue deadline passed before it could start; ``unknown``: its site is
    unavailable or did not answer (the last known fields are shown, nothing
    is deleted).  ``stopped``/``suspended`` come from public clouds.
    """

    QUEUED = "queued"
    PENDING = "pending"
    PROLOG = "prolog"
    BOOT = "boot"
    RUNNING = "running"
    SHUTDOWN = "shutdown"
    STOPPED = "stopped"
    SUSPENDED = "suspended"
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        """No further change will come (the VM is gone or never started)."""
        return self in (BrokerVmState.DONE, BrokerVmState.EXPIRED)


class VmKind(StrEnum):
    SITE = "site"
    CLOUD = "cloud"


# --- tables ------------------------------------------------------------------


class BrokerVm(SQLModel, table=True):
    """One VM (or queued request) the broker made for a user, and where it lives.

    ``site_vm_id`` is the VM's id at its site (or the cloud's instance id);
    the other fields are the last values the site reported, shown when the
    site is unavailable.  ``spec`` keeps the create request (for queued
    requests and the event log).
    """

    __tablename__ = "broker_vms"

    id: str = Field(primary_key=True)
    owner: str = Field(index=True)
    group: str | None = None
    name: str
    image: str
    vcpus: int
    memory_mib: int
    instance_type: str | None = None
    state: str = Field(default=BrokerVmState.PENDING, index=True)
    state_reason: str | None = None
    site: str | None = Field(default=None, index=True)
    kind: str | None = None
    site_vm_id: str | None = None
    ready: bool = False
    ip: str | None = None
    host: str | None = None
    addresses: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    price_per_hour: float | None = None
    estimated_cost: float = 0.0
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class BrokerVmEvent(SQLModel, table=True):
    """One line of a VM's broker-side event log (placement attempts, queue, site status)."""

    __tablename__ = "broker_vm_events"

    id: int | None = Field(default=None, primary_key=True)
    vm_id: str = Field(index=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    site: str | None = None
    from_state: str | None = None
    to_state: str | None = None
    reason: str


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


class QueueRecord(SQLModel, table=True):
    """A deferred request (``federation.queue.QueuedRequest``) as stored."""

    __tablename__ = "broker_queue"

    id: str = Field(primary_key=True)
    priority: int = 0
    seq: int = 0
    enqueued_at: float = 0.0
    deadline: float | None = None
    state: str = "waiting"
    reason: str | None = None
    request: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class BrokerIdempotency(SQLModel, table=True):
    """A create seen with an ``Idempotency-Key``: a retry returns the same VMs."""

    __tablename__ = "broker_idempotency"
    __table_args__ = (UniqueConstraint("owner", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    owner: str
    key: str
    request_hash: str
    vm_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


# --- API: VMs ------------------------------------------------------------------


class BrokerVmCreate(VmRequestBase):
    """Body of the broker's ``POST /vms``: the site's create body plus placement fields.

    Placement: ``site`` (run exactly there), ``constraints`` (``site in [a, b]``,
    ``country == FR``), ``preferred_sites``, ``data_location``, ``network_type`` (a free
    address of that pool type).  Site-level options (pool names, volumes, host tags)
    are not taken: they name one site's resources.
    Policy: ``queue`` (wait for capacity instead of bursting), ``allow_burst``
    (false: never to a public cloud), ``confidential`` (never leaves the
    federation), ``priority`` and ``deadline_seconds`` for the queue,
    ``expected_hours`` for the burst budget estimate.
    """

    site: str | None = PydField(default=None, pattern=SITE_NAME_PATTERN)
    constraints: list[str] = PydField(default_factory=list, max_length=16)
    preferred_sites: list[str] = PydField(default_factory=list, max_length=16)
    data_location: dict[str, str] = PydField(default_factory=dict, max_length=16)
    network_type: NetworkType | None = None
    queue: bool = False
    allow_burst: bool = True
    confidential: bool = False
    priority: int = PydField(default=0, ge=0, le=1000)
    deadline_seconds: float | None = PydField(default=None, gt=0)
    expected_hours: float | None = PydField(default=None, gt=0)


class BrokerVmPublic(BaseModel):
    """A VM as the broker shows it: the site's VM resource plus where it runs."""

    id: str
    name: str
    owner: str
    image: str
    instance_type: str | None
    vcpus: int
    memory_mib: int
    state: BrokerVmState
    state_reason: str | None
    ready: bool
    ip: str | None
    host: str | None
    created_at: datetime
    updated_at: datetime
    site: str | None = PydField(description="the site or public cloud running the VM")
    kind: VmKind | None = PydField(description="site or cloud; null while queued")
    site_vm_id: str | None = PydField(description="the VM's id at its site or cloud")
    addresses: list[str] = PydField(default_factory=list)
    price_per_hour: float | None = None
    queue_position: int | None = None
    deadline: datetime | None = None


class BrokerVmList(BaseModel):
    """A listing; ``partial`` with ``warnings`` when a site did not answer."""

    vms: list[BrokerVmPublic]
    partial: bool = False
    warnings: list[str] = PydField(default_factory=list)


class BrokerVmEventPublic(BaseModel):
    at: datetime
    from_state: str | None
    to_state: str | None
    reason: str
    source: str = PydField(description="'broker' or the name of the site that logged it")


class BrokerVmEventList(BaseModel):
    vm_id: str
    events: list[BrokerVmEventPublic]
    warnings: list[str] = PydField(default_factory=list)


class ConsoleOutput(BaseModel):
    vm_id: str
    output: str
    truncated: bool


# --- API: sites ----------------------------------------------------------------


class HostReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = PydField(default=None, max_length=255)
    free_cpus: int = PydField(ge=0)
    free_memory_mib: int = PydField(ge=0)


class SiteReport(BaseModel):
    """A site's heartbeat: where its API is, and its free capacity right now."""

    model_config = ConfigDict(extra="forbid")

    site: str = PydField(pattern=SITE_NAME_PATTERN)
    public_url: str = PydField(min_length=8, max_length=2048)
    hosts: list[HostReport] = PydField(default_factory=list, max_length=100_000)
    cached_images: list[str] = PydField(default_factory=list, max_length=10_000)
    fetchable_images: list[str] | None = PydField(default_factory=list, max_length=10_000)
    free_addresses: dict[NetworkType, int] = PydField(default_factory=dict)
    allowed_vos: list[str] | None = None
    location: dict[str, str] = PydField(default_factory=dict, max_length=32)
    price_per_hour: float = PydField(default=0.0, ge=0)
    available: bool = True
    version: str | None = PydField(default=None, max_length=64)

    @field_validator("public_url")
    @classmethod
    def _url(cls, value: str) -> str:
        from broker.config import check_url

        return check_url(value)


class HeartbeatAck(BaseModel):
    site: str
    registered: bool = PydField(description="true on the heartbeat that registered the site")
    heartbeat_timeout_seconds: float


class SitePublic(BaseModel):
    """A site or public cloud of the federation, as users see it."""

    name: str
    kind: VmKind
    status: str = PydField(description="available, unavailable, or never-registered (sites)")
    reason: str | None = None
    url: str | None = None
    last_heartbeat: datetime | None = None
    hosts: int = 0
    free_cpus: int = 0
    free_memory_mib: int = 0
    largest_free_cpus: int = 0
    largest_free_memory_mib: int = 0
    cached_images: list[str] = PydField(default_factory=list)
    location: dict[str, str] = PydField(default_factory=dict)
    price_per_hour: float | None = None
    vms: int = PydField(default=0, description="the broker's active VMs there")


class SiteList(BaseModel):
    sites: list[SitePublic]


class ImagePublic(BaseModel):
    """An image of the federation (the site image resource plus where it is offered)."""

    name: str
    format: str
    direct_kernel_boot: bool
    description: str
    available: bool
    sites: list[str]


class ImageList(BaseModel):
    images: list[ImagePublic]
    partial: bool = False
    warnings: list[str] = PydField(default_factory=list)


class Health(BaseModel):
    status: str
    broker: str
    version: str
    sites_available: int
    sites_known: int
