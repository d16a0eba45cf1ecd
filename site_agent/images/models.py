"""The image table (``images``): registered and saved images of this site.

The table never leaves the persistence layer and the cache: handlers return
:class:`core.resources.images.ImagePublic`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from core.db import UTCDateTime, utcnow
from core.resources.images import ImageState


class Image(SQLModel, table=True):
    """A registered or saved image. Its cached files live in ``state_dir/images/<id>/``.

    ``kernel`` / ``initrd`` hold a :class:`BootFileSource` as JSON (direct
    kernel boot). ``size``/``sha1``/``sha256`` describe the disk file.
    """

    __tablename__ = "images"

    id: str = Field(primary_key=True)
    name: str = Field(unique=True, index=True)
    owner: str = Field(index=True)
    public: bool = False
    source: str
    format: str
    url: str | None = None
    size: int | None = None
    sha1: str | None = None
    sha256: str | None = None
    kernel: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    initrd: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    cmdline: str | None = None
    description: str = ""
    state: str = Field(default=ImageState.PENDING, index=True)
    state_reason: str | None = None
    cached_bytes: int | None = None
    origin_vm: str | None = Field(default=None, index=True)
    base_image: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    cached_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
