"""Images: registration (``POST /images``), the image resource, and save-as-image.

An image is known at a site by its name. Registered images are fetched once
by URL and verified (exact size, SHA-1/SHA-256) before any VM boots from
them; saved images come from a VM's root disk (``stop`` with ``save``).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic import Field as PydField

#: Image names: the same rule as ``[[images]]`` names (no ``/``, no leading ``.``).
IMAGE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
SHA1_PATTERN = r"^[0-9a-fA-F]{40}$"
SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"
MAX_IMAGE_BYTES = 2 * 1024**4  # 2 TiB: larger is certainly a typo
MAX_URL_LENGTH = 2048


class ImageState(StrEnum):
    """Where an image is in its life at this site.

    ``pending``: registered (or evicted), not in the cache; the next use
    downloads it. ``downloading``: being fetched and verified. ``ready``: in
    the cache, verified. ``failed``: the source or the download was bad
    (``state_reason`` says why); it is not retried. ``saving``: being made
    from a VM's root disk (save as image).
    """

    PENDING = "pending"
    DOWNLOADING = "downloading"
    READY = "ready"
    FAILED = "failed"
    SAVING = "saving"


class ImageSource(StrEnum):
    """Where an image comes from: the site config file, a URL, or a VM's root disk."""

    CONFIG = "config"
    URL = "url"
    SAVED = "saved"


def _checksums_given(sha1: str | None, sha256: str | None) -> None:
    if sha1 is None and sha256 is None:
        raise ValueError("give sha1 and/or sha256 of the file")


class BootFileSource(BaseModel):
    """A kernel or initrd to download: URL, exact size, and at least one checksum."""

    model_config = ConfigDict(extra="forbid")

    url: str = PydField(min_length=1, max_length=MAX_URL_LENGTH)
    size: int = PydField(ge=1, le=MAX_IMAGE_BYTES, description="exact size in bytes")
    sha1: str | None = PydField(default=None, pattern=SHA1_PATTERN)
    sha256: str | None = PydField(default=None, pattern=SHA256_PATTERN)

    @model_validator(mode="after")
    def _needs_checksum(self) -> BootFileSource:
        _checksums_given(self.sha1, self.sha256)
        self.sha1 = self.sha1.lower() if self.sha1 else None
        self.sha256 = self.sha256.lower() if self.sha256 else None
        return self


class BootFileInfo(BaseModel):
    """A cached kernel or initrd as the API shows it."""

    url: str | None
    size: int | None
    sha1: str | None
    sha256: str | None


class ImageRegister(BaseModel):
    """Body of ``POST /images``.

    ``url`` is ``http(s)://`` (anyone) or ``file:///absolute/path`` (site
    admins only). ``size`` is the exact byte count of the disk file and at
    least one of ``sha1``/``sha256`` is required: the download is checked
    against them before any VM uses it.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = PydField(pattern=IMAGE_NAME_PATTERN)
    url: str = PydField(min_length=1, max_length=MAX_URL_LENGTH)
    format: Literal["qcow2", "raw"] = "qcow2"
    size: int = PydField(ge=1, le=MAX_IMAGE_BYTES, description="exact size of the disk file")
    sha1: str | None = PydField(default=None, pattern=SHA1_PATTERN)
    sha256: str | None = PydField(default=None, pattern=SHA256_PATTERN)
    kernel: BootFileSource | None = None
    initrd: BootFileSource | None = None
    cmdline: str | None = PydField(default=None, max_length=1024)
    description: str = PydField(default="", max_length=1024)
    public: bool = PydField(default=False, description="bootable by every user (site admins)")

    @model_validator(mode="after")
    def _consistent(self) -> ImageRegister:
        _checksums_given(self.sha1, self.sha256)
        self.sha1 = self.sha1.lower() if self.sha1 else None
        self.sha256 = self.sha256.lower() if self.sha256 else None
        if self.kernel is None and (self.initrd is not None or self.cmdline is not None):
            raise ValueError("initrd and cmdline need a kernel (direct kernel boot)")
        if self.cmdline is not None and any(c in self.cmdline for c in "\x00\r\n"):
            raise ValueError("cmdline must be one line")
        if any(c in self.description for c in "\x00"):
            raise ValueError("description must not contain NUL")
        return self


class ImagePublic(BaseModel):
    """An image as the API shows it. ``url`` is shown to its owner and site admins only."""

    name: str
    owner: str | None
    public: bool
    source: ImageSource
    format: str
    state: ImageState
    state_reason: str | None
    available: bool = PydField(description="a VM can be created from it now")
    direct_kernel_boot: bool
    url: str | None
    size: int | None
    sha1: str | None
    sha256: str | None
    kernel: BootFileInfo | None
    initrd: BootFileInfo | None
    cmdline: str | None
    description: str
    cached_bytes: int | None
    origin_vm: str | None
    base_image: str | None
    created_at: datetime | None
    cached_at: datetime | None
    last_used_at: datetime | None


class ImageList(BaseModel):
    images: list[ImagePublic]


class ImageDeleted(BaseModel):
    name: str
    freed_bytes: int


class SaveAs(BaseModel):
    """``save`` in the body of ``POST /vms/{id}/stop``: keep the root disk as a new image."""

    model_config = ConfigDict(extra="forbid")

    name: str = PydField(pattern=IMAGE_NAME_PATTERN)
    description: str = PydField(default="", max_length=1024)
