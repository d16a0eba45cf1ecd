"""Errors of the broker, and their mapping to HTTP errors.

Exception tree (with the HTTP status :func:`to_stratus_error` gives)::

    BrokerError                  root; never raised bare
    ├── UnknownSite              a site the user named is not in the federation   404
    ├── VmNotFound               no such VM, or not the caller's                  404
    ├── SiteAuthError            a heartbeat's certificate is not acceptable
    │   ├── NoSiteCertificate    no verified client certificate on the request    401
    │   └── SiteNotTrusted       certificate DN not on the allow-list, or not
    │                            the DN of the site named in the path            403
    ├── InvalidOperation         not possible for this VM (console of a cloud
    │                            VM, stop of a queued request...)                409
    ├── IdempotencyKeyReused     the key was used with another request body      409
    └── SiteUnreachable          the VM's site is unavailable or did not answer  503

Errors of the federation library (:mod:`federation.errors`) are mapped with
:func:`federation.errors.to_stratus_error`; the broker's middleware
(:func:`broker.api.middleware.broker_error_middleware`) turns both trees into
the JSON error body of :mod:`core.errors`.
"""

from __future__ import annotations

from typing import Any

from core.errors import Conflict, Forbidden, NotFound, StratusError, Unauthorized, Unavailable


class BrokerError(Exception):
    """Root of the broker's errors.  ``details`` goes into the JSON error body."""

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class UnknownSite(BrokerError):
    """The user named a site (``site`` field or ``site in [...]``) the broker does not know."""


class VmNotFound(BrokerError):
    """No VM with this id for the caller (another user's VM answers the same)."""


class SiteAuthError(BrokerError):
    """A site's heartbeat could not be authenticated."""


class NoSiteCertificate(SiteAuthError):
    """The heartbeat did not come over TLS with a verified client certificate."""


class SiteNotTrusted(SiteAuthError):
    """The certificate is valid but its DN is not the one trusted for this site name."""


class InvalidOperation(BrokerError):
    """The operation does not apply to this VM in its current place or state."""


class IdempotencyKeyReused(BrokerError):
    """An ``Idempotency-Key`` already used by the caller with a different request body."""


class SiteUnreachable(BrokerError):
    """The site holding the VM is unavailable (missed heartbeats) or did not answer."""


def to_stratus_error(exc: BrokerError) -> StratusError:
    """The :class:`core.errors.StratusError` to answer for ``exc`` (see the tree above)."""
    details = exc.details
    if isinstance(exc, UnknownSite):
        return NotFound(exc.message, details=details, code="unknown_site")
    if isinstance(exc, VmNotFound):
        return NotFound(exc.message, details=details)
    if isinstance(exc, NoSiteCertificate):
        return Unauthorized(exc.message, details=details, code="site_certificate_required")
    if isinstance(exc, SiteNotTrusted):
        return Forbidden(exc.message, details=details, code="site_not_trusted")
    if isinstance(exc, InvalidOperation):
        return Conflict(exc.message, details=details, code="invalid_operation")
    if isinstance(exc, IdempotencyKeyReused):
        return Conflict(exc.message, details=details, code="idempotency_key_reused")
    if isinstance(exc, SiteUnreachable):
        return Unavailable(exc.message, details=details, code="site_unreachable")
    return StratusError(exc.message, details=details)
