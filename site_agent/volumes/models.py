"""Volumes, attachments (tables) and their API shapes.

``Volume`` rows live from create to delete, independent of any VM.
``VolumeAttachment`` rows say which disk (a volume, or a read-only static
disk: an image) is plugged into which VM at which guest device; they go when
the disk is detached or the VM ends. Tables never leave the persistence and
service layers: handlers return the ``...Public`` models.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic import Field as PydField
from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from core.db import UTCDateTime, utcnow
from core.volume_request import (
    IMAGE_NAME_PATTERN,
    UUID_PATTERN,
    VolumeCreateBase,
)


class VolumeState(StrEnum):
    CREATING = "creating"  # an image is being copied into it
    READY = "ready"
    FAILED = "failed"  # the copy failed; see state_reason (delete it)


class Volume(SQLModel, table=True):
    """One persistent volume (a qcow2 file ``state_dir/volumes/<id>.qcow2``)."""

    __tablename__ = "volumes"

    id: str = Field(primary_key=True)
    owner: str = Field(index=True)
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


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VolumeIdempotency(SQLModel, table=True):
    """A volume create seen with an ``Idempotency-Key``: a retry returns the same volume."""

    __tablename__ = "volume_idempotency_keys"
    __table_args__ = (UniqueConstraint("owner", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    owner: str
    key: str
    request_hash: str
    volume_id: str
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class VolumeCreate(VolumeCreateBase):
    """Body of ``POST /volumes``: empty, a copy-on-write of a volume, or a copy of an image."""


class VolumeAttach(_Input):
    """Body of ``POST /volumes/{id}/attach``."""

    vm_id: str = PydField(pattern=UUID_PATTERN)
    readonly: bool = False


class VolumeDetach(_Input):
    """Body of ``POST /volumes/{id}/detach``; ``vm_id`` may be left out if attached once."""

    vm_id: str | None = PydField(default=None, pattern=UUID_PATTERN)


class DiskAttach(_Input):
    """Body of ``POST /vms/{id}/disks``: a volume, or a static disk (an image, read-only)."""

    volume: str | None = PydField(default=None, pattern=UUID_PATTERN)
    static_disk: str | None = PydField(default=None, pattern=IMAGE_NAME_PATTERN)
    readonly: bool = PydField(default=False, description="static disks are always read-only")

    @model_validator(mode="after")
    def _one_disk(self) -> DiskAttach:
        if (self.volume is None) == (self.static_disk is None):
            raise ValueError("give exactly one of volume or static_disk")
        return self


class AttachmentPublic(BaseModel):
    vm_id: str
    device: str
    readonly: bool


class VolumePublic(BaseModel):
    """A volume as the API shows it. ``attachments`` lists the caller's VMs only."""

    id: str
    owner: str
    tag: str
    visibility: str
    size_gib: int
    format: str
    state: VolumeState
    state_reason: str | None
    origin: str
    cow_of: str | None
    image: str | None
    attached: int = PydField(description="how many VMs (anyone's) have it attached")
    attachments: list[AttachmentPublic]
    created_at: datetime
    updated_at: datetime


class VolumeList(BaseModel):
    volumes: list[VolumePublic]


class VmDisk(BaseModel):
    """A disk plugged into a VM (besides its root disk and context seed)."""

    vm_id: str
    device: str
    kind: Literal["volume", "static"]
    volume_id: str | None
    image: str | None
    readonly: bool


class VmDiskList(BaseModel):
    vm_id: str
    disks: list[VmDisk]
