"""VM tables: ``vms`` and ``vm_events``.

Table classes never leave the persistence layer: handlers return the shapes
of :mod:`core.resources.vms` (``site_agent.vms.views`` turns rows into them).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from core.db import UTCDateTime, utcnow
from core.vm_state import VmState


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
    # The real owner (``site_agent.owners``): the site account, who it was, and the broker
    # that created the VM on the user's behalf (None: a direct call).
    owner: str = Field(index=True)
    owner_identity: str | None = None
    owner_groups: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    owner_fqans: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    via: str | None = Field(default=None, index=True)
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
