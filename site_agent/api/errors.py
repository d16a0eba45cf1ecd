"""The one place where the site agent's domain errors become HTTP answers.

:data:`HTTP_ERRORS` maps each :class:`~site_agent.errors.SiteAgentError`
class to the ``core.errors`` class (status) and error code it is answered
with; an error takes the entry of its nearest mapped ancestor. The middleware
:func:`site_errors` (installed by ``site_agent.app.build_site_app``) raises the
mapped ``core`` error ``from`` the domain error, and ``core.app``'s error
middleware writes the JSON body. A site error with no mapped ancestor is a bug:
it is re-raised as it is and answered as a 500 (traceback in the log only).

The tree, with the answer of each error, is drawn in :mod:`site_agent.errors`.
"""

from __future__ import annotations

from aiohttp import web

from core.app import Handler
from core.errors import (
    Conflict,
    Forbidden,
    NotFound,
    QuotaExceeded,
    StratusError,
    Unavailable,
    ValidationFailed,
)
from site_agent.compute.errors import (
    ComputeError,
    DeviceError,
    DomainNotFound,
    DomainStateError,
    NoHostAvailable,
)
from site_agent.errors import InvalidRequest, SiteAgentError
from site_agent.images.errors import (
    CacheFull,
    ImageBusy,
    ImageConfigured,
    ImageError,
    ImageForbidden,
    ImageInUse,
    ImageNameTaken,
    ImageNotFound,
    ImageNotUsable,
    ImageTooLarge,
    SourceRefused,
)
from site_agent.networks.errors import (
    AddressInUse,
    AddressUnavailable,
    NetworkPoolError,
    PoolExhausted,
    UnknownPool,
)
from site_agent.storage.qemu_img import QemuImgError
from site_agent.vms.errors import (
    DeviceFailed,
    HypervisorFailed,
    InvalidVmState,
    NoCapacity,
    SavePending,
    VmForbidden,
    VmNotFound,
)
from site_agent.volumes.errors import (
    NotAttached,
    VolumeBusy,
    VolumeFileError,
    VolumeForbidden,
    VolumeInvalid,
    VolumeNotFound,
    VolumeQuotaExceeded,
)

#: Domain error class -> (HTTP error class, error code; None: the class's own code,
#: field: the request field named in the details, if the error does not say it itself).
HTTP_ERRORS: dict[type[SiteAgentError], tuple[type[StratusError], str | None, str | None]] = {
    InvalidRequest: (ValidationFailed, None, None),
    # VMs
    VmNotFound: (NotFound, None, None),
    VmForbidden: (Forbidden, None, None),
    InvalidVmState: (Conflict, "invalid_state", None),
    NoCapacity: (Conflict, "no_capacity", None),
    SavePending: (Conflict, "save_pending", None),
    HypervisorFailed: (Unavailable, "hypervisor_error", None),
    DeviceFailed: (Conflict, "device_error", None),
    # hypervisor drivers (when an operation meets them directly)
    ComputeError: (Unavailable, "hypervisor_error", None),
    DomainNotFound: (Conflict, "invalid_state", None),
    DomainStateError: (Conflict, "invalid_state", None),
    DeviceError: (Conflict, "device_error", None),
    NoHostAvailable: (Conflict, "no_capacity", None),
    # images
    ImageError: (Conflict, "image_error", None),
    ImageNotFound: (NotFound, None, None),
    ImageNameTaken: (Conflict, "image_exists", None),
    ImageForbidden: (Forbidden, None, None),
    SourceRefused: (ValidationFailed, None, "url"),
    ImageTooLarge: (ValidationFailed, None, "url"),
    ImageInUse: (Conflict, "image_in_use", None),
    ImageBusy: (Conflict, "image_busy", None),
    ImageConfigured: (Conflict, "image_configured", None),
    ImageNotUsable: (Conflict, "image_unavailable", None),
    CacheFull: (Unavailable, "image_cache_full", None),
    # volumes
    VolumeNotFound: (NotFound, None, None),
    VolumeForbidden: (Forbidden, None, None),
    VolumeQuotaExceeded: (QuotaExceeded, None, None),
    VolumeInvalid: (ValidationFailed, None, None),
    VolumeBusy: (Conflict, "volume_in_use", None),
    NotAttached: (Conflict, "not_attached", None),
    VolumeFileError: (Unavailable, "storage_error", None),
    # address pools
    NetworkPoolError: (ValidationFailed, None, "network"),
    UnknownPool: (NotFound, None, None),
    PoolExhausted: (Conflict, "no_free_address", None),
    AddressUnavailable: (ValidationFailed, None, "address"),
    AddressInUse: (Conflict, "address_in_use", None),
    # storage
    QemuImgError: (Unavailable, "storage_error", None),
}


def http_error(exc: SiteAgentError) -> StratusError | None:
    """The HTTP error ``exc`` is answered with; None if no ancestor of it is mapped (a bug)."""
    for kind in type(exc).__mro__:
        entry = HTTP_ERRORS.get(kind)
        if entry is None:
            continue
        http, code, field = entry
        message = str(exc)
        details = exc.details
        if details is None and field is not None:
            details = [{"field": field, "problem": message}]
        return http(message, code=code, details=details)
    return None


@web.middleware
async def site_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every :class:`SiteAgentError` a handler lets through as its mapped HTTP error."""
    try:
        return await handler(request)
    except SiteAgentError as exc:
        error = http_error(exc)
        if error is None:
            raise
        raise error from exc
