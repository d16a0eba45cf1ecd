"""The volume tables: volumes and attachments.

``Volume`` rows live from create to delete, independent of any VM.
``VolumeAttachment`` rows say which disk (a volume, or a read-only static
disk: an image) is plugged into which VM at which guest device; they go when
the disk is detached or the VM ends. Tables never leave the persistence and
service layers: handlers return the shapes of :mod:`core.resources.volumes`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from core.db import UTCDateTime, utcnow
from core.resources.volumes import VolumeState


class Volume(SQLModel, table=True):
    """One persistent volume (a qcow2 file ``state_dir/volumes/<id>.qcow2``)."""

    __tablename__ = "volumes"

    id: str = Field(primary_key=True)
    # The real owner (``site_agent.owners``): the site account, who it was, and the broker
    # that created the volume on the user's behalf (None: a direct call).
    owner: str = Field(index=True)
    owner_identity: str | None = None
    owner_groups: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    owner_fqans: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    via: str | None = Field(default=None, index=True)
    tag: str = ""
    visibility: str = "private"  # private | public
    size_gib: int
    format: str = "qcow2"
    state: str = Field(default=VolumeState.READY, index=True)
    state_reason: str | None = None
    origin: str = "empty"  # empty | volume | image
    cow_of: str | None = Field(default=None, index=True)  # the backing volume
    image: str | None = None  # the image copied in
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class VolumeAttachment(SQLModel, table=True):
    """A disk plugged into a VM: a volume (``volume_id``) or a static disk (``image``)."""

    __tablename__ = "volume_attachments"
    __table_args__ = (UniqueConstraint("vm_id", "device"),)

    id: int | None = Field(default=None, primary_key=True)
    vm_id: str = Field(index=True, foreign_key="vms.id")
    vm_owner: str
    volume_id: str | None = Field(default=None, index=True, foreign_key="volumes.id")
    image: str | None = None
    device: str
    readonly: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
