"""Domain errors shared by every Stratus service, and their HTTP mapping.

Exception tree::

    StratusError                 500 internal_error (root; never raised bare)
    ├── BadRequest               400 bad_request
    │   └── ValidationFailed     422 validation_failed
    ├── Unauthorized             401 unauthorized
    ├── Forbidden                403 forbidden
    │   └── QuotaExceeded        403 quota_exceeded
    ├── NotFound                 404 not_found
    ├── Conflict                 409 conflict
    ├── PayloadTooLarge          413 payload_too_large
    └── Unavailable              503 unavailable

Every package defines its own root (``ComputeError``, ``AuthError``...) and
translates it into one of these at its service edge; the middleware in
:mod:`core.app` turns any ``StratusError`` into the JSON error body
``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

from typing import Any


class StratusError(Exception):
    """Root of all errors a Stratus service reports to its callers."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, details: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code

    def to_json(self) -> dict[str, Any]:
        """The JSON error body for this error."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return {"error": body}


class BadRequest(StratusError):
    status = 400
    code = "bad_request"


class ValidationFailed(BadRequest):
    status = 422
    code = "validation_failed"


class Unauthorized(StratusError):
    status = 401
    code = "unauthorized"


class Forbidden(StratusError):
    status = 403
    code = "forbidden"


class QuotaExceeded(Forbidden):
    code = "quota_exceeded"


class NotFound(StratusError):
    status = 404
    code = "not_found"


class Conflict(StratusError):
    status = 409
    code = "conflict"


class PayloadTooLarge(StratusError):
    status = 413
    code = "payload_too_large"


class Unavailable(StratusError):
    status = 503
    code = "unavailable"
