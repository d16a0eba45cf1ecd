"""Errors of the federation library, and their mapping to HTTP errors.

Exception tree (with the HTTP status :func:`to_stratus_error` gives)::

    FederationError              root; never raised bare
    ├── InvalidConstraint        also a ValueError: a constraint that does not
    │                            parse, or contradicts another one         400
    ├── PlacementError           no site passes the filters; reasons per site 409
    ├── AllAttemptsFailed        every candidate refused or failed       409/503
    ├── ProviderError            raised by ComputeProvider implementations
    │   ├── SiteRefused          the site/cloud answered no (capacity, quota,
    │   │                        unknown image or size, a bad request); the
    │   │                        site's own 4xx status and code are kept   4xx
    │   ├── SiteFailed           the site/cloud is broken or unreachable
    │   │                        (timeout, 5xx or throttled after retries,
    │   │                        malformed answer)                         503
    │   ├── ProviderNotFound     the provider does not know this id        404
    │   └── OperationNotSupported the provider does not offer this
    │                            optional operation                         409
    └── QueueError               unknown or no longer waiting queue entry  404

Third-party errors (httpx, libcloud, requests) are translated into these at
the provider edge with ``raise ... from exc``; nothing outside
``federation.providers`` sees a third-party exception.  The broker turns any
``FederationError`` into a :class:`core.errors.StratusError` with
:func:`to_stratus_error`, so the JSON body carries the per-site reasons in
``details``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import BadRequest, Conflict, NotFound, StratusError, Unavailable


class FederationError(Exception):
    """Root of all federation library errors."""


class InvalidConstraint(FederationError, ValueError):
    """A user constraint is not in the grammar, or contradicts another one.

    See :mod:`federation.constraints` for the grammar.  ``text`` is the
    offending expression and ``position`` the 0-based character offset where
    parsing stopped (None for contradictions between expressions).
    """

    def __init__(self, message: str, *, text: str = "", position: int | None = None) -> None:
        super().__init__(message)
        self.text = text
        self.position = position


class PlacementError(FederationError):
    """No site can place the request.

    ``rejected`` maps every examined site to a human-readable reason
    (``"no host with 8 free CPUs and 16384 MiB free RAM ..."``).  When this
    error is raised every site in the request's scope has been examined, so the
    map is complete.  ``codes`` maps the same sites to the machine-readable
    reason code (see :class:`federation.model.RejectCode`).
    """

    def __init__(
        self,
        message: str,
        *,
        rejected: Mapping[str, str],
        codes: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.rejected: dict[str, str] = dict(rejected)
        self.codes: dict[str, str] = dict(codes or {})


@dataclass(frozen=True)
class Attempt:
    """One try of one candidate: ``outcome`` is ``placed``, ``refused`` or ``failed``."""

    site: str
    outcome: str
    reason: str


class AllAttemptsFailed(FederationError):
    """Every candidate was tried and each one refused or failed.

    ``attempts`` lists them in the order they were tried.  ``all_refused`` is
    True when no site *failed* (every site answered no), which the broker
    reports as 409; otherwise at least one site was broken and it is a 503.
    """

    def __init__(self, message: str, *, attempts: Sequence[Attempt]) -> None:
        super().__init__(message)
        self.attempts: tuple[Attempt, ...] = tuple(attempts)

    @property
    def all_refused(self) -> bool:
        return all(a.outcome == "refused" for a in self.attempts)


class ProviderError(FederationError):
    """Root of errors raised by :class:`federation.providers.base.ComputeProvider`.

    ``site`` is the provider's name (a peer site name or a public cloud name).
    """

    def __init__(self, site: str, reason: str) -> None:
        super().__init__(f"site {site}: {reason}")
        self.site = site
        self.reason = reason


class SiteRefused(ProviderError):
    """The site or cloud answered and declined: no capacity, quota, unknown image or size.

    A refusal is final for this request at this site: retrying the same site
    will not help, the next candidate should be tried.  Nothing was created.
    ``status`` and ``code`` are the provider's answer (a site's 4xx and its
    error code), so a forwarded operation can report them as they are.
    """

    def __init__(
        self, site: str, reason: str, *, status: int = 409, code: str = "site_refused"
    ) -> None:
        super().__init__(site, reason)
        self.status = status
        self.code = code


class SiteFailed(ProviderError):
    """The site or cloud could not be used: unreachable, timeout, 5xx or throttling after
    retries, or an answer that could not be understood.

    Retries have already been made by the provider when this is raised.
    """


class ProviderNotFound(ProviderError):
    """The provider has no VM (volume, image...) with this id, or not for this user."""


class OperationNotSupported(ProviderError):
    """The provider does not offer this optional operation (``operation`` names it)."""

    def __init__(self, site: str, operation: str) -> None:
        super().__init__(site, f"{operation} is not supported by {site}")
        self.operation = operation


class QueueError(FederationError):
    """A deferred-queue operation names an entry that is unknown or no longer waiting."""


def to_stratus_error(exc: FederationError) -> StratusError:
    """The :class:`core.errors.StratusError` the broker should answer for ``exc``.

    ``PlacementError`` -> 409 ``placement_failed`` with ``details={"sites": {site: reason}}``;
    ``AllAttemptsFailed`` -> 409 when every site refused, else 503, with the attempts;
    ``InvalidConstraint`` -> 400; ``ProviderNotFound`` -> 404; ``SiteRefused`` -> the
    provider's 4xx status and code; ``OperationNotSupported`` -> 409 ``not_supported``;
    ``SiteFailed`` -> 503; ``QueueError`` -> 404.
    """
    details: Any
    if isinstance(exc, PlacementError):
        return Conflict(str(exc), details={"sites": exc.rejected}, code="placement_failed")
    if isinstance(exc, AllAttemptsFailed):
        details = {
            "attempts": [
                {"site": a.site, "outcome": a.outcome, "reason": a.reason} for a in exc.attempts
            ]
        }
        if exc.all_refused:
            return Conflict(str(exc), details=details, code="placement_failed")
        return Unavailable(str(exc), details=details, code="sites_unavailable")
    if isinstance(exc, InvalidConstraint):
        details = {"constraint": exc.text, "position": exc.position}
        return BadRequest(str(exc), details=details, code="invalid_constraint")
    if isinstance(exc, ProviderNotFound):
        return NotFound(str(exc))
    if isinstance(exc, OperationNotSupported):
        return Conflict(str(exc), details={"site": exc.site}, code="not_supported")
    if isinstance(exc, SiteRefused):
        error = StratusError(str(exc), details={"site": exc.site}, code=exc.code)
        error.status = exc.status if 400 <= exc.status < 500 else 409
        return error
    if isinstance(exc, SiteFailed):
        return Unavailable(str(exc), details={"site": exc.site}, code="site_failed")
    if isinstance(exc, QueueError):
        return NotFound(str(exc))
    return StratusError(str(exc))
