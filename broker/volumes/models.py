"""Volumes at the broker: the ``broker_volumes`` table and the API shapes.

A volume lives at exactly one site; the broker keeps who owns it and where
(``broker_volumes``). The shapes are the site's
(:mod:`core.resources.volumes`) with broker ids, plus ``site`` and
``site_volume_id``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydField
from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from core.db import UTCDateTime, utcnow
from core.resources.volumes import AttachmentPublic, VmDisk, VolumeCreateBase
from core.site_report import SITE_NAME_PATTERN

# --- table ----------------------------------------------------------------------


class BrokerVolume(SQLModel, table=True):
    """A volume the broker made at a site for a user.

    ``site_volume_id`` is None while the site has not answered the create
    (the create is idempotent at the site on the broker's id, so it can be
    sent again). ``spec`` is the site's create body; ``last`` the volume as
    its site last showed it (shown, in state ``unknown``, while the site
    does not answer).
    """

    __tablename__ = "broker_volumes"

    id: str = Field(primary_key=True)
    owner: str = Field(index=True)
    site: str = Field(index=True)
    site_volume_id: str | None = Field(default=None, index=True)
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    last: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


# --- API ------------------------------------------------------------------------


class BrokerVolumeCreate(VolumeCreateBase):
    """Body of the broker's ``POST /volumes``: the site's create body plus ``site``.

    ``cow_of`` names a broker volume id.
    """

    site: str | None = PydField(
        default=None,
        pattern=SITE_NAME_PATTERN,
        description="create it at this site (default: cow_of's site, else the cheapest "
        "available site offering the image)",
    )


class BrokerVolumeShowQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait: Literal["ready"] | None = PydField(
        default=None, description="wait until an image copy is finished (ready or failed)"
    )
    timeout: float = PydField(default=60.0, gt=0, le=600)


class BrokerVolumePublic(BaseModel):
    """The site's volume resource with broker ids, plus ``site`` and ``site_volume_id``."""

    id: str
    owner: str
    tag: str
    visibility: str
    size_gib: int
    format: str
    state: str = PydField(description="creating, ready, failed; unknown while its site is down")
    state_reason: str | None
    origin: str
    cow_of: str | None
    image: str | None
    attached: int = PydField(description="how many VMs (anyone's) have it attached")
    attachments: list[AttachmentPublic] = PydField(
        description="the caller's VMs only (broker VM ids)"
    )
    via: str | None = PydField(default=None, description="the broker that created it")
    created_at: datetime
    updated_at: datetime
    site: str = PydField(description="the site holding the volume")
    site_volume_id: str = PydField(description="the volume's id at its site")


class BrokerVolumeList(BaseModel):
    """A listing; ``partial`` with ``warnings`` when a site did not answer."""

    volumes: list[BrokerVolumePublic]
    partial: bool = False
    warnings: list[str] = PydField(default_factory=list)


class BrokerVolumeDeleted(BaseModel):
    id: str
    deleted: bool
    site: str


class BrokerVmDisk(VmDisk):
    """A disk plugged into a VM (broker ids), and the site where that happened."""

    site: str


class BrokerVmDiskList(BaseModel):
    vm_id: str
    disks: list[BrokerVmDisk]
