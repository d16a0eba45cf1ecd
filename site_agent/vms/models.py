"""VM persistence and API shapes (``XBase``/``X(table=True)``/``XCreate``/``XPublic``).

Table classes never leave the persistence layer: handlers return ``VmPublic``.
"""

from __future__ import annotations

from datetime import datetime
from ipaddress import IPv4Address
from typing import Annotated, Any

from pydantic import Field as PydField
from pydantic import StringConstraints, model_validator
from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from core.db import UTCDateTime, utcnow
from core.vm_request import VmRequestBase
from site_agent.vms.states import VmState

MAX_EXTRA_DISKS = 16
_UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
VolumeId = Annotated[str, StringConstraints(pattern=_UUID_PATTERN)]
ImageName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class VmBase(SQLModel):
    name: str
    image: str
    vcpus: int
    memory_mib: int
    instance_type: str | None = None


class Vm(VmBase, table=True):
    """One VM row. ``host_uri`` is where it runs; ``state`` a :class:`VmState` value."""

    __tablename__ = "vms"

    id: str = Field(primary_key=True)
    owner: str = Field(index=True)
    group: str | None = None
    state: str = Field(default=VmState.PENDING, index=True)
    state_reason: str | None = None
    host_uri: str | None = Field(default=None, index=True)
    ready: bool = False
    ip: str | None = None
    # Byte offset in the console log where the current boot began (set on reboot),
    # so readiness is never taken from an earlier boot's output.
    boot_log_offset: int = 0
    ssh_keys: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    context: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    user_data: str | None = None
    # The network lease taken at create (kept for the record after the lease is freed).
    network: str | None = None
    address: str | None = None
    mac: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class VmEvent(SQLModel, table=True):
    """One line of a VM's event log: a state transition or a notable fact, with its reason."""

    __tablename__ = "vm_events"

    id: int | None = Field(default=None, primary_key=True)
    vm_id: str = Field(index=True, foreign_key="vms.id")
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    from_state: str | None = None
    to_state: str | None = None
    reason: str


class IdempotencyRecord(SQLModel, table=True):
    """A create request seen with an ``Idempotency-Key``: a retry returns the same VMs."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("owner", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    owner: str
    key: str
    request_hash: str
    vm_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class VmCreate(VmRequestBase):
    """Body of the site's ``POST /vms``: the shared request plus this site's resources."""

    host_tags: list[str] = PydField(default_factory=list, max_length=16)
    group: str | None = PydField(
        default=None,
        min_length=1,
        max_length=200,
        description="share with a group you belong to: its members may see and manage the VM",
    )
    network: str | None = PydField(
        default=None,
        pattern=r"^[a-z][a-z0-9-]{0,23}$",
        description="address pool (GET /networks); default: the site's first pool",
    )
    address: IPv4Address | None = PydField(
        default=None, description="a free address of the pool (count 1 only)"
    )
    volumes: list[VolumeId] = PydField(
        default_factory=list, max_length=8, description="volumes attached read-write (count 1)"
    )
    readonly_volumes: list[VolumeId] = PydField(
        default_factory=list, max_length=8, description="volumes attached read-only"
    )
    static_disks: list[ImageName] = PydField(
        default_factory=list, max_length=8, description="images attached read-only"
    )

    @model_validator(mode="after")
    def _devices(self) -> VmCreate:
        if self.address is not None and self.count > 1:
            raise ValueError("address needs count 1: every VM gets its own address")
        if self.volumes and self.count > 1:
            raise ValueError(
                "volumes need count 1: a volume is attached read-write to one VM only "
                "(readonly_volumes can be shared)"
            )
        every = [*self.volumes, *self.readonly_volumes]
        if len(set(every)) != len(every):
            raise ValueError("a volume is listed more than once in volumes/readonly_volumes")
        if len(set(self.static_disks)) != len(self.static_disks):
            raise ValueError("a static disk is listed more than once")
        if len(every) + len(self.static_disks) > MAX_EXTRA_DISKS:
            raise ValueError(f"at most {MAX_EXTRA_DISKS} volumes and static disks per VM")
        return self


class VmPublic(VmBase):
    """A VM as the API shows it."""

    id: str
    owner: str
    group: str | None
    state: VmState
    state_reason: str | None
    host: str | None
    ready: bool
    ip: str | None = PydField(description="the address the guest reported when ready")
    network: str | None = PydField(default=None, description="the pool of the VM's lease")
    address: str | None = PydField(default=None, description="the leased address")
    mac: str | None = None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, vm: Vm, host_names: dict[str, str] | None = None) -> VmPublic:
        data: dict[str, Any] = vm.model_dump()
        uri = data.pop("host_uri")
        data["host"] = (host_names or {}).get(uri, uri) if uri else None
        return cls.model_validate(data)


class VmList(SQLModel):
    vms: list[VmPublic]


class VmEventPublic(SQLModel):
    at: datetime
    from_state: VmState | None
    to_state: VmState | None
    reason: str


class VmEventList(SQLModel):
    vm_id: str
    events: list[VmEventPublic]


class ConsoleOutput(SQLModel):
    vm_id: str
    output: str
    truncated: bool
