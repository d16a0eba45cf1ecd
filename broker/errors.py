"""Errors of the broker: one root, each error with its HTTP status and code.

Exception tree (status and code as :func:`to_stratus_error` answers them)::

    BrokerError                  root; never raised bare                       500
    ├── UnknownSite              a site the user named is not in the
    │                            federation                          404 unknown_site
    ├── NotFoundHere             no such resource for the caller (another
    │   │                        user's answers the same)             404 not_found
    │   ├── VmNotFound           no such VM
    │   ├── VolumeNotFound       no such volume
    │   ├── NetworkNotFound      no pool of that name at any available site
    │   └── ImageNotFound        no image of that name at any available site
    ├── SiteAuthError            a heartbeat's certificate is not acceptable
    │   ├── NoSiteCertificate    no verified client certificate   401 site_certificate_required
    │   └── SiteNotTrusted       DN not on the allow-list, or not the
    │                            DN of the site named in the path  403 site_not_trusted
    ├── NotAllowed               the caller may not do this (share with a group
    │                            they are not in)                      403 forbidden
    ├── InvalidOperation         not possible for this resource in its place
    │                            or state (stop of a queued request, a
    │                            volume of another site...)      409 invalid_operation
    ├── Ambiguous                a name several sites have: give ``site``
    │                                                 409 ambiguous_network / ambiguous_image
    ├── NotPlaced                a VM no site could take that was neither
    │                            burst nor queued: reasons per site, the
    │                            attempts, the burst decision     409 placement_failed
    │                            (503 sites_unavailable when candidates failed
    │                            rather than refused)
    ├── NowhereToPlace           no available site can take a volume or an
    │                            image registration, reasons per site
    │                                                             409 placement_failed
    ├── LimitExceeded            over a broker limit (count, priority)  422 validation_failed
    ├── InvalidReport            a heartbeat the placer cannot use    422 validation_failed
    └── SiteUnreachable          the resource's site is unavailable (missed
                                 heartbeats, never registered) or did not
                                 answer                          503 site_unreachable

Errors of the federation library (:mod:`federation.errors`: ``SiteRefused``
keeps the site's own 4xx status and code, ``SiteFailed`` is 503, ``OperationNotSupported``
409 ``not_supported``, placement failures 409 ``placement_failed`` with the
reasons per site) and of :mod:`auth.errors` are mapped by their packages'
own ``to_stratus_error``; :mod:`broker.api.middleware` is the one place that
applies all three.
"""

from __future__ import annotations

from typing import Any

from core.errors import StratusError


class BrokerError(Exception):
    """Root of the broker's errors; ``details`` goes into the JSON error body."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, details: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code


class UnknownSite(BrokerError):
    """The user named a site (``site`` field, ``site in [...]``, ``?site=``) the broker
    does not know."""

    status = 404
    code = "unknown_site"


class NotFoundHere(BrokerError):
    """No such resource for the caller; another user's resource answers the same."""

    status = 404
    code = "not_found"


class VmNotFound(NotFoundHere):
    """No VM with this id for the caller."""


class VolumeNotFound(NotFoundHere):
    """No volume with this id for the caller."""


class NetworkNotFound(NotFoundHere):
    """No address pool of this name at any available site."""


class ImageNotFound(NotFoundHere):
    """No image of this name (that the caller can see) at any available site."""


class SiteAuthError(BrokerError):
    """A site's heartbeat could not be authenticated."""

    status = 401
    code = "unauthorized"


class NoSiteCertificate(SiteAuthError):
    """The heartbeat did not come over TLS with a verified client certificate."""

    code = "site_certificate_required"


class SiteNotTrusted(SiteAuthError):
    """The certificate is valid but its DN is not the one trusted for this site name."""

    status = 403
    code = "site_not_trusted"


class NotAllowed(BrokerError):
    """The caller is known but may not do this (e.g. share a VM with a group they are not in)."""

    status = 403
    code = "forbidden"


class InvalidOperation(BrokerError):
    """The operation does not apply to this resource in its current place or state."""

    status = 409
    code = "invalid_operation"


class Ambiguous(BrokerError):
    """A name (pool, image) several sites have; the caller must say which (``?site=``)."""

    status = 409
    code = "ambiguous"


class NotPlaced(BrokerError):
    """A VM no site could take, and that was neither burst nor queued.

    ``details``: ``sites`` (why each site was left out or refused),
    ``attempts`` (each candidate tried), ``burst`` (the policy's decision).
    Built with ``status=503, code="sites_unavailable"`` when candidates
    failed rather than refused (trying again later may work).
    """

    status = 409
    code = "placement_failed"

    def __init__(
        self, message: str, *, details: Any = None, code: str | None = None, status: int = 409
    ) -> None:
        super().__init__(message, details=details, code=code)
        self.status = status


class NowhereToPlace(BrokerError):
    """No available site can take a volume or an image; ``details.sites`` says why."""

    status = 409
    code = "placement_failed"


class LimitExceeded(BrokerError):
    """The request is over one of the broker's limits (VMs per request, queue priority)."""

    status = 422
    code = "validation_failed"


class InvalidReport(BrokerError):
    """A site's heartbeat that validates but cannot be used (a pool that is no network)."""

    status = 422
    code = "validation_failed"


class SiteUnreachable(BrokerError):
    """The site holding the resource is unavailable (missed heartbeats, never
    registered) or did not answer."""

    status = 503
    code = "site_unreachable"


def to_stratus_error(exc: BrokerError) -> StratusError:
    """The :class:`core.errors.StratusError` to answer for ``exc`` (see the tree above)."""
    error = StratusError(exc.message, details=exc.details, code=exc.code)
    error.status = exc.status
    return error
