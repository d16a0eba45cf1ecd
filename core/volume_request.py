"""The volume request shapes that the site agent and the broker share.

``POST /volumes``, ``PATCH /volumes/{id}`` and ``GET /volumes`` take the
same fields at a site and at the broker (which adds ``site`` to the create);
both validate them here, the same way.
"""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
IMAGE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
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
