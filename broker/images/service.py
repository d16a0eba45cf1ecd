"""Images through the broker: every site's images, asked as the caller.

* ``GET /images``: the images of every available site (and the images the
  public clouds map, for bursting), one entry per name with ``sites``: the
  shape (state, source, size...) is that of the first site where it can be
  used now. An unavailable or silent site makes the listing ``partial``.
* ``GET /images/{name}`` (``?site=``): the image at that site, or found at
  every available site.
* ``POST /images``: registered at ``site``, or at every available site that
  accepts it (``all_sites``); each site's answer is in ``registrations``.
* ``DELETE /images/{name}?site=`` (``site`` may be left out when one site
  has it).

The site applies its own rules (who may register ``file://`` or public
images, who may delete) to the real user, and owns a user's images (a saved
image, ``vm stop --save``) by that user, so they are shown, booted and
deleted through the broker like at the site.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from auth.principal import Principal
from broker.errors import Ambiguous, ImageNotFound, NowhereToPlace
from broker.images.models import (
    BrokerImageDeleted,
    BrokerImageList,
    BrokerImagePublic,
    BrokerImageRegister,
    BrokerImageRegistered,
    Registration,
)
from broker.runtime import Runtime
from core.resources.images import ImagePublic, ImageRegister, ImageSource, ImageState
from federation.errors import ProviderError, ProviderNotFound, SiteRefused
from federation.providers.base import ComputeProvider, Operation

T = TypeVar("T")


def merged(found: list[tuple[str, ImagePublic]]) -> BrokerImagePublic:
    """One entry for an image several sites have: the first usable one's shape, all sites."""
    best = next((image for _, image in found if image.available), found[0][1])
    return BrokerImagePublic(**best.model_dump(), sites=[site for site, _ in found])


class ImageService:
    """The broker's ``/images`` (see the module docstring)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def _sites(self) -> list[str]:
        """Available sites that serve images."""
        registry = self.rt.registry
        return [
            s for s in registry.available_sites() if registry.provider(s).supports(Operation.IMAGES)
        ]

    def _as(self, principal: Principal, site: str) -> ComputeProvider:
        return self.rt.registry.provider(site).acting_for(self.rt.user(principal))

    async def _everywhere(
        self, call: Callable[[str], Awaitable[T]], warnings: list[str]
    ) -> dict[str, T]:
        """``call(site)`` at every available site at once; a failing site goes in warnings."""
        sites = self._sites()
        timeout = self.rt.list_timeout

        async def one(site: str) -> T | None:
            try:
                async with asyncio.timeout(timeout):
                    return await call(site)
            except ProviderNotFound:
                return None
            except (ProviderError, TimeoutError) as exc:
                detail = exc.reason if isinstance(exc, ProviderError) else None
                warnings.append(f"site {site} did not answer ({detail or 'timeout'}); partial")
                return None

        answers = await asyncio.gather(*(one(s) for s in sites))
        return {s: a for s, a in zip(sites, answers, strict=True) if a is not None}

    def _unlisted(self, warnings: list[str]) -> None:
        for name in self.rt.registry.site_names():
            available, reason = self.rt.registry.status(name)
            if not available:
                warnings.append(f"{reason}; its images are not listed")

    async def list_images(self, principal: Principal) -> BrokerImageList:
        """Every available site's images for the caller, and the clouds' mapped images."""
        warnings: list[str] = []
        answers = await self._everywhere(lambda s: self._as(principal, s).list_images(), warnings)
        found: dict[str, list[tuple[str, ImagePublic]]] = {}
        for site, images in answers.items():
            for image in images:
                found.setdefault(image.name, []).append((site, image))
        entries = {name: merged(at) for name, at in found.items()}
        for cloud in self.rt.config.clouds:
            for name, image_id in cloud.images.items():
                entry = entries.get(name) or entries.setdefault(name, _cloud_image(name))
                if entry.description == "":
                    entry.description = f"{cloud.name} image {image_id} (bursting only)"
                entry.sites.append(cloud.name)
        self._unlisted(warnings)
        listed = sorted(entries.values(), key=lambda i: i.name)
        return BrokerImageList(images=listed, partial=bool(warnings), warnings=sorted(warnings))

    async def _holders(self, principal: Principal, name: str) -> dict[str, ImagePublic]:
        warnings: list[str] = []
        return await self._everywhere(lambda s: self._as(principal, s).get_image(name), warnings)

    async def get(self, principal: Principal, name: str, site: str | None) -> BrokerImagePublic:
        """The image at ``site``, or as every available site that has it shows it."""
        if site is not None:
            self.rt.registry.check_site(site)
            provider = self.rt.registry.usable(site, f"show image {name!r}")
            image = await provider.acting_for(self.rt.user(principal)).get_image(name)
            return BrokerImagePublic(**image.model_dump(), sites=[site])
        holders = await self._holders(principal, name)
        if not holders:
            raise ImageNotFound(f"no image {name!r} at any available site")
        return merged(list(holders.items()))

    async def register(
        self, principal: Principal, body: BrokerImageRegister
    ) -> BrokerImageRegistered:
        """Register at ``site`` (its refusal is the answer) or at every available site."""
        image_body = ImageRegister.model_validate(body.model_dump(exclude={"site", "all_sites"}))
        if body.site is not None:
            self.rt.registry.check_site(body.site)
            provider = self.rt.registry.usable(body.site, f"register image {body.name!r}")
            image = await provider.acting_for(self.rt.user(principal)).register_image(image_body)
            done = Registration(site=body.site, registered=True, status=201)
            return BrokerImageRegistered(
                **image.model_dump(), sites=[body.site], registrations=[done]
            )
        sites = self._sites()

        async def one(site: str) -> tuple[Registration, ImagePublic | None]:
            try:
                image = await self._as(principal, site).register_image(image_body)
            except SiteRefused as exc:
                return Registration(
                    site=site, registered=False, status=exc.status, code=exc.code,
                    message=exc.reason,
                ), None  # fmt: skip
            except ProviderError as exc:
                return Registration(
                    site=site, registered=False, status=503, code="site_failed",
                    message=exc.reason,
                ), None  # fmt: skip
            return Registration(site=site, registered=True, status=201), image

        answers = await asyncio.gather(*(one(s) for s in sites))
        registrations = [r for r, _ in answers]
        made = [(r.site, image) for r, image in answers if image is not None]
        if not made:
            raise NowhereToPlace(
                f"no available site accepted image {body.name!r}",
                details={
                    "sites": {r.site: r.message for r in registrations},
                    "registrations": [r.model_dump() for r in registrations],
                },
            )
        image = merged(made)
        return BrokerImageRegistered(**image.model_dump(), registrations=registrations)

    async def delete(self, principal: Principal, name: str, site: str | None) -> BrokerImageDeleted:
        """Delete the image at ``site`` (or at the only site that has it)."""
        if site is None:
            holders = sorted(await self._holders(principal, name))
            if not holders:
                raise ImageNotFound(f"no image {name!r} at any available site")
            if len(holders) > 1:
                raise Ambiguous(
                    f"sites {', '.join(holders)} all have an image {name!r}: give ?site=",
                    code="ambiguous_image",
                    details={"sites": holders},
                )
            site = holders[0]
        self.rt.registry.check_site(site)
        provider = self.rt.registry.usable(site, f"delete image {name!r}")
        deleted = await provider.acting_for(self.rt.user(principal)).delete_image(name)
        return BrokerImageDeleted(**deleted.model_dump(), site=site)


def _cloud_image(name: str) -> BrokerImagePublic:
    """A name only the public clouds map (an image id per cloud, for bursting)."""
    return BrokerImagePublic(
        name=name, owner=None, public=True, source=ImageSource.CONFIG, format="cloud",
        state=ImageState.READY, state_reason=None, available=True, direct_kernel_boot=False,
        url=None, size=None, sha1=None, sha256=None, kernel=None, initrd=None, cmdline=None,
        description="", cached_bytes=None, origin_vm=None, base_image=None, created_at=None,
        cached_at=None, last_used_at=None, sites=[],
    )  # fmt: skip
