"""Errors of the volume subsystem (the tree and HTTP answers: :mod:`site_agent.errors`)."""

from __future__ import annotations

from site_agent.errors import SiteAgentError


class VolumeError(SiteAgentError):
    """Root of the volume errors."""


class VolumeNotFound(VolumeError):
    """No such volume, or one the caller may not see (existence is not leaked)."""


class VolumeForbidden(VolumeError):
    """The caller sees the volume (it is public) but may not change it or write to it."""


class VolumeQuotaExceeded(VolumeError):
    """Creating the volume would exceed the account's quota."""


class VolumeInvalid(VolumeError):
    """A request value that cannot be honoured (e.g. a size below the source's)."""


class VolumeBusy(VolumeError):
    """The volume's state or attachments forbid the operation now."""


class NotAttached(VolumeError):
    """A detach named a volume or device that is not attached there."""


class VolumeFileError(VolumeError):
    """qemu-img (or the file system) failed on a volume file."""
