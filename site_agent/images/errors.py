"""Errors of the image cache (the tree and HTTP answers: :mod:`site_agent.errors`).

``site_agent.api.errors`` answers them; the VM lifecycle translates the few
that mean something else in a create (an unknown image is a bad request value).
"""

from __future__ import annotations

from site_agent.errors import SiteAgentError


class ImageError(SiteAgentError):
    """Root of image cache errors."""


class ImageNotFound(ImageError):
    """No image of that name, or not one the caller may see (existence is not leaked)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no image named {name!r}")
        self.name = name


class ImageNameTaken(ImageError):
    """An image (registered, saved or configured) already has that name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"an image named {name!r} already exists")
        self.name = name


class ImageInUse(ImageError):
    """The image backs a non-terminal VM or a volume, so it cannot be deleted."""


class ImageBusy(ImageError):
    """The image is being downloaded or saved; the operation must wait."""


class ImageConfigured(ImageError):
    """The image comes from the site configuration file; the API cannot change it."""


class ImageNotUsable(ImageError):
    """The image cannot boot a VM now: ``failed``, still being saved, or files missing."""


class ImageForbidden(ImageError):
    """The caller's role does not allow it (``file://`` URLs and public images: site admins)."""


class SourceRefused(ImageError):
    """The URL is malformed, of an unsupported scheme, or names no usable local file."""


class ImageTooLarge(ImageError):
    """The registered size does not fit in the cache (``[image_cache] max_bytes``)."""


class FetchFailed(ImageError):
    """The source could not be read (connection error, HTTP error status...)."""


class VerificationFailed(FetchFailed):
    """The downloaded bytes are not the registered image."""


class SizeMismatch(VerificationFailed):
    """More or fewer bytes than the registered size (a longer one is cut off early)."""


class ChecksumMismatch(VerificationFailed):
    """A SHA-1 or SHA-256 digest differs from the registered one."""


class BadImageFormat(VerificationFailed):
    """The disk is not of its declared format, or has a backing or external data file."""


class CacheFull(ImageError):
    """No room in ``[image_cache] max_bytes`` even after evicting every unused image."""


class SaveFailed(ImageError):
    """Turning a VM's root disk into an image failed."""
