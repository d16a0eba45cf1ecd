"""VMs at the broker: the ``broker_*`` VM tables and the API shapes.

Tables never leave :mod:`broker.vms.store`; services answer with the
``*Public`` models. The VM resource is the site's
(:class:`core.resources.vms.VmPublic`, same fields, same meaning) plus where
it lives: ``site`` (a site or a public cloud), ``kind``, ``site_vm_id``,
``addresses``, ``price_per_hour`` and, while queued, ``queue_position`` and
``deadline``. The create body is the site's (:class:`~core.resources.vms.VmCreate`)
plus placement and policy fields.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from pydantic import Field as PydField
from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from broker.sites.models import ProviderKind
from core.db import UTCDateTime, utcnow
from core.resources.networks import NetworkType
from core.resources.vms import VmCreate, VmEventPublic, VmPublic
from core.site_report import SITE_NAME_PATTERN
from core.vm_state import VmState

# --- tables ---------------------------------------------------------------------


class BrokerVm(SQLModel, table=True):
    """One VM (or queued request) the broker made for a user, and where it lives.

    ``site_vm_id`` is the VM's id at its site (or the cloud's instance id);
    the other fields are the last values the provider reported, shown while
    it is unavailable. ``spec`` keeps the create request as the user sent it
    (broker ids), for queued requests and the record.
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
    state: str = Field(default=VmState.PENDING.value, index=True)
    state_reason: str | None = None
    site: str | None = Field(default=None, index=True)
    kind: str | None = None
    site_vm_id: str | None = None
    ready: bool = False
    ip: str | None = None
    host: str | None = None
    network: str | None = None
    address: str | None = None
    mac: str | None = None
    via: str | None = None
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


class QueueRecord(SQLModel, table=True):
    """A deferred request (``federation.queue.QueuedRequest``) as stored.

    ``user`` is the :class:`~auth.delegation.DelegatedUser` the request is
    made for: when it starts, the site creates it as that user.
    """

    __tablename__ = "broker_queue"

    id: str = Field(primary_key=True)
    priority: int = 0
    seq: int = 0
    enqueued_at: float = 0.0
    deadline: float | None = None
    state: str = "waiting"
    reason: str | None = None
    request: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    user: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


# --- API ------------------------------------------------------------------------


class BrokerVmCreate(VmCreate):
    """Body of the broker's ``POST /vms``: the site's create body plus placement and policy.

    Site fields (:class:`~core.resources.vms.VmCreate`) take part in placement and
    the chosen site receives them: ``network`` (a pool name: only sites having it
    with a free address), ``address`` (in that pool), ``volumes`` and
    ``readonly_volumes`` (broker volume ids: the VM goes to their site, which
    gets its own ids), ``static_disks`` (images the site must have),
    ``host_tags`` (a host of the site carrying them all), ``group``.

    Placement: ``site`` (run exactly there), ``constraints`` (``site in [a, b]``,
    ``country == FR``), ``preferred_sites``, ``data_location``, ``network_type``
    (a free address in a pool of that type; the site gets its default pool of
    that type). Policy: ``queue`` (wait for capacity instead of bursting),
    ``allow_burst`` (false: never to a public cloud), ``confidential`` (never
    leaves the federation), ``priority`` and ``deadline_seconds`` for the
    queue, ``expected_hours`` for the burst budget estimate.
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


#: The fields of :class:`BrokerVmCreate` only the broker reads (the rest goes to the site).
BROKER_FIELDS = frozenset(set(BrokerVmCreate.model_fields) - set(VmCreate.model_fields))


class BrokerVmPublic(VmPublic):
    """A VM as the broker shows it: the site's VM resource plus where it lives."""

    site: str | None = PydField(description="the site or public cloud running the VM")
    kind: ProviderKind | None = PydField(description="site or cloud; null while queued")
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


class BrokerVmEventPublic(VmEventPublic):
    """One line of a VM's event log, and which side wrote it."""

    source: str = PydField(description="'broker' or the name of the site that logged it")


class BrokerVmEventList(BaseModel):
    vm_id: str
    events: list[BrokerVmEventPublic]
    warnings: list[str] = PydField(default_factory=list)
