"""Volumes: create/update/list bodies, the volume resource, attachments and a VM's disks.

``POST /volumes``, ``PATCH /volumes/{id}`` and ``GET /volumes`` take the
same fields at a site and at the broker (which adds ``site`` to the create);
both validate them here, the same way.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.resources.images import IMAGE_NAME_PATTERN

UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
TAG_PATTERN = r"^[^\x00-\x1f\x7f]{0,64}$"
MIN_SIZE_GIB = 1
MAX_SIZE_GIB = 1024
#: A quantified group that contains a quantifier: the classic catastrophic-backtracking shape.
_NESTED_QUANTIFIER = re.compile(r"\([^)]*[+*}][^)]*\)\s*[+*{?]")

Visibility = Literal["private", "public"]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VolumeCreateBase(_Input):
    """Empty, a copy-on-write of a volume (``cow_of``), or a copy of an image (``image``)."""

    size_gib: int | None = Field(
        default=None,
        ge=MIN_SIZE_GIB,
        le=MAX_SIZE_GIB,
        description="GiB; required unless cow_of is given (default: the source volume's size)",
    )
    tag: str = Field(default="", pattern=TAG_PATTERN)
    visibility: Visibility = "private"
    cow_of: str | None = Field(
        default=None, pattern=UUID_PATTERN, description="copy-on-write of this volume"
    )
    image: str | None = Field(
        default=None, pattern=IMAGE_NAME_PATTERN, description="copy this image into the volume"
    )

    @model_validator(mode="after")
    def _one_origin(self) -> Self:
        if self.cow_of is not None and self.image is not None:
            raise ValueError("give cow_of or image, not both")
        if self.cow_of is None and self.size_gib is None:
            raise ValueError("size_gib is required (only cow_of defaults to the source's size)")
        return self


class VolumeUpdate(_Input):
    """Body of ``PATCH /volumes/{id}``: the owner changes the tag or the visibility."""

    tag: str | None = Field(default=None, pattern=TAG_PATTERN)
    visibility: Visibility | None = None

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.tag is None and self.visibility is None:
            raise ValueError("give tag and/or visibility")
        return self


class VolumeListQuery(_Input):
    """Query of ``GET /volumes``; ``tag`` is a regular expression (no nested quantifiers)."""

    tag: str | None = Field(
        default=None, max_length=64, description="regular expression searched in the tag"
    )
    visibility: Visibility | None = None
    owner: str | None = Field(default=None, max_length=64, description="admins: this owner")
    all: bool = Field(default=False, description="admins: every owner's volumes")

    @model_validator(mode="after")
    def _safe_regex(self) -> Self:
        if self.tag is not None:
            if _NESTED_QUANTIFIER.search(self.tag):
                raise ValueError("tag: nested quantifiers are not allowed")
            try:
                re.compile(self.tag)
            except re.error as exc:
                raise ValueError(f"tag: not a regular expression: {exc}") from exc
        return self


class VolumeState(StrEnum):
    CREATING = "creating"  # an image is being copied into it
    READY = "ready"
    FAILED = "failed"  # the copy failed; see state_reason (delete it)


class VolumeCreate(VolumeCreateBase):
    """Body of ``POST /volumes``: empty, a copy-on-write of a volume, or a copy of an image."""


class VolumeAttach(_Input):
    """Body of ``POST /volumes/{id}/attach``."""

    vm_id: str = Field(pattern=UUID_PATTERN)
    readonly: bool = False


class VolumeDetach(_Input):
    """Body of ``POST /volumes/{id}/detach``; ``vm_id`` may be left out if attached once."""

    vm_id: str | None = Field(default=None, pattern=UUID_PATTERN)


class DiskAttach(_Input):
    """Body of ``POST /vms/{id}/disks``: a volume, or a static disk (an image, read-only)."""

    volume: str | None = Field(default=None, pattern=UUID_PATTERN)
    static_disk: str | None = Field(default=None, pattern=IMAGE_NAME_PATTERN)
    readonly: bool = Field(default=False, description="static disks are always read-only")

    @model_validator(mode="after")
    def _one_disk(self) -> Self:
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
    attached: int = Field(description="how many VMs (anyone's) have it attached")
    attachments: list[AttachmentPublic]
    via: str | None = Field(
        default=None, description="the broker that created it for its owner (null: directly)"
    )
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
