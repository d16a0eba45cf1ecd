"""Images at the broker: the site's image shapes plus the sites that have each image."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic import Field as PydField

from core.resources.images import ImageDeleted, ImagePublic, ImageRegister
from core.site_report import SITE_NAME_PATTERN


class BrokerImagePublic(ImagePublic):
    """An image of the federation: as the first site offering it shows it (state,
    source, size...), and every site (or public cloud) that has it."""

    sites: list[str] = PydField(description="the sites (and public clouds) that have it")


class BrokerImageList(BaseModel):
    images: list[BrokerImagePublic]
    partial: bool = False
    warnings: list[str] = PydField(default_factory=list)


class BrokerImageRegister(ImageRegister):
    """Body of the broker's ``POST /images``: the site's body plus where to register it:
    ``site`` (one site) or ``all_sites`` (every available site that accepts it)."""

    site: str | None = PydField(default=None, pattern=SITE_NAME_PATTERN)
    all_sites: bool = PydField(default=False, description="every available site")

    @model_validator(mode="after")
    def _where(self) -> Self:
        if (self.site is None) == (not self.all_sites):
            raise ValueError("give either site or all_sites: true")
        return self


class Registration(BaseModel):
    """What one site answered to a registration."""

    site: str
    registered: bool
    status: int = PydField(description="the site's HTTP status (201 when registered)")
    code: str | None = None
    message: str | None = None


class BrokerImageRegistered(BrokerImagePublic):
    """The image as registered, and every site's answer."""

    registrations: list[Registration]


class ImageSiteQuery(BaseModel):
    """``?site=`` of ``GET``/``DELETE /images/{name}``."""

    model_config = ConfigDict(extra="forbid")
    site: str | None = PydField(
        default=None, pattern=SITE_NAME_PATTERN, description="the image of this site"
    )


class BrokerImageDeleted(ImageDeleted):
    site: str
