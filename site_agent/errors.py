"""The site agent's root exception, and the whole tree of errors its code raises.

Domain code (VMs, images, volumes, address pools, hypervisor drivers) raises
these, never ``core.errors`` (HTTP) errors; the one place that turns them into
HTTP answers is :mod:`site_agent.api.errors` (a middleware with one table).
The status and error code each one is answered with are written on the right::

    SiteAgentError                       (root; unmapped subclasses are a bug: 500)
    ├── InvalidRequest                   422 validation_failed  (details name the field)
    ├── VmError                          site_agent/vms/errors.py
    │   ├── VmNotFound                   404 not_found
    │   ├── VmForbidden                  403 forbidden          (a group the caller is not in)
    │   ├── InvalidVmState               409 invalid_state
    │   ├── NoCapacity                   409 no_capacity        (details: why, per host)
    │   ├── SavePending                  409 save_pending       (details: the image)
    │   ├── HypervisorFailed             503 hypervisor_error
    │   ├── DeviceFailed                 409 device_error
    │   └── InvalidTransition            500                    (a bug in the state machine)
    ├── ComputeError                     503 hypervisor_error   site_agent/compute/errors.py
    │   ├── DomainCreateFailed           503 hypervisor_error
    │   ├── DomainNotFound               409 invalid_state
    │   ├── HypervisorUnavailable        503 hypervisor_error
    │   ├── DeviceError                  409 device_error
    │   │   └── DiskNotAttached          409 device_error
    │   ├── NetworkError                 503 hypervisor_error
    │   ├── DomainStateError             409 invalid_state
    │   └── NoHostAvailable              409 no_capacity
    ├── ImageError                       409 image_error        site_agent/images/errors.py
    │   ├── ImageNotFound                404 not_found
    │   ├── ImageNameTaken               409 image_exists
    │   ├── ImageInUse                   409 image_in_use
    │   ├── ImageBusy                    409 image_busy
    │   ├── ImageConfigured              409 image_configured
    │   ├── ImageNotUsable               409 image_unavailable
    │   ├── ImageForbidden               403 forbidden
    │   ├── SourceRefused                422 validation_failed  (field url)
    │   ├── ImageTooLarge                422 validation_failed  (field url)
    │   ├── FetchFailed                  409 image_error
    │   │   └── VerificationFailed
    │   │       ├── SizeMismatch
    │   │       ├── ChecksumMismatch
    │   │       └── BadImageFormat
    │   ├── CacheFull                    503 image_cache_full
    │   └── SaveFailed                   409 image_error
    ├── VolumeError                      500                    site_agent/volumes/errors.py
    │   ├── VolumeNotFound               404 not_found
    │   ├── VolumeForbidden              403 forbidden
    │   ├── VolumeQuotaExceeded          403 quota_exceeded
    │   ├── VolumeInvalid                422 validation_failed
    │   ├── VolumeBusy                   409 volume_in_use
    │   ├── NotAttached                  409 not_attached
    │   └── VolumeFileError              503 storage_error
    ├── NetworkPoolError                 422 validation_failed  site_agent/networks/errors.py
    │   ├── UnknownPool                  404 not_found
    │   ├── PoolExhausted                409 no_free_address
    │   └── AddressUnavailable           422 validation_failed  (field address)
    │       ├── AddressOutsidePool       422 validation_failed  (field address)
    │       └── AddressInUse             409 address_in_use
    ├── QemuImgError                     503 storage_error      site_agent/storage/qemu_img.py
    ├── GuestImageError                  (CLI only)             site_agent/guest/errors.py
    │   └── MissingHostComponent
    └── HeartbeatRefused                 (background only)      site_agent/federation_link.py

The same error can mean different things in different requests: a pool name
in a create body that does not exist is a bad request value (422), the same
name in ``GET /networks/{name}`` is a missing resource (404). Code that meets
such an error where it means something else translates it into the error of
its own meaning (here :class:`InvalidRequest` naming the field) with
``raise ... from exc``; the table then stays one table.

Errors from ``core`` that are shared by every service (``core.idempotency``'s
``IdempotencyKeyReused``) pass through unchanged: they are HTTP errors already.
"""

from __future__ import annotations

from typing import Any


class SiteAgentError(Exception):
    """Root of every error of the site agent. ``details``: JSON-able data for the answer."""

    details: Any = None


class InvalidRequest(SiteAgentError):
    """A value of the request the site cannot honour (an unknown image, pool or volume...).

    ``field`` names the offending request field; the answer's details then
    say ``[{"field": ..., "problem": ...}]`` (``problem``: the message, unless given).
    """

    def __init__(
        self, message: str, *, field: str | None = None, problem: str | None = None
    ) -> None:
        super().__init__(message)
        self.field = field
        if field is not None:
            self.details = [{"field": field, "problem": problem or message}]
