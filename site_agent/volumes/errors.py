"""Errors of the volume subsystem (tree drawn in ``site_agent.volumes``)."""

from __future__ import annotations

from core.errors import (
    Conflict,
    Forbidden,
    NotFound,
    QuotaExceeded,
    StratusError,
    Unavailable,
    ValidationFailed,
)


class VolumeError(Exception):
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


class IdempotencyKeyReused(VolumeError):
    """The ``Idempotency-Key`` was used before with a different request body."""


class VolumeFileError(VolumeError):
    """qemu-img (or the file system) failed on a volume file."""


_HTTP: list[tuple[type[VolumeError], type[StratusError], str | None]] = [
    (VolumeNotFound, NotFound, None),
    (VolumeForbidden, Forbidden, None),
    (VolumeQuotaExceeded, QuotaExceeded, None),
    (VolumeInvalid, ValidationFailed, None),
    (VolumeBusy, Conflict, "volume_in_use"),
    (NotAttached, Conflict, "not_attached"),
    (IdempotencyKeyReused, Conflict, "idempotency_key_reused"),
    (VolumeFileError, Unavailable, "storage_error"),
]


def http_error(exc: VolumeError) -> StratusError:
    """The HTTP error reported for ``exc`` (raise it ``from exc``)."""
    for kind, http, code in _HTTP:
        if isinstance(exc, kind):
            return http(str(exc), code=code)
    return StratusError(str(exc))
