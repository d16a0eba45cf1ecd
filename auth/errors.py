"""Authentication and authorisation errors.

Exception tree (HTTP status given by :func:`to_stratus_error`)::

    AuthError                      (root; 401)
    ├── CredentialRejected         a credential was presented and is not valid (401)
    │   └── HeaderTooLarge         an Authorization/certificate header is oversized (401)
    ├── NoCredential               nothing usable was presented (401)
    ├── AccessDenied               identity is fine, rights are not (403)
    ├── AuthUnavailable            a credential cannot be checked now, e.g. the OIDC
    │                              issuer is unreachable and no keys are cached (503)
    └── AccountError               account management (store) errors
        ├── AccountNotFound        no such account or identity (404)
        ├── AccountConflict        name or identity already taken (409)
        └── InvalidAccountData     e.g. a bad account name or a too short password (422)

Messages never contain secrets (tokens, keys, passwords); they name what was
wrong and, where it helps, the identity concerned.
"""

from __future__ import annotations

from core.errors import (
    Conflict,
    Forbidden,
    NotFound,
    StratusError,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)


class AuthError(Exception):
    """Root of auth errors."""


class CredentialRejected(AuthError):
    """A presented credential failed verification."""


class HeaderTooLarge(CredentialRejected):
    """A credential header is larger than the configured limit."""


class NoCredential(AuthError):
    """The request carries no credential this service accepts."""


class AccessDenied(AuthError):
    """The caller is authenticated but not allowed to do this."""


class AuthUnavailable(AuthError):
    """The credential cannot be verified right now (an upstream is down)."""


class AccountError(AuthError):
    """Root of account store errors."""


class AccountNotFound(AccountError):
    """The account or identity does not exist."""


class AccountConflict(AccountError):
    """The account name or identity is already in use."""


class InvalidAccountData(AccountError):
    """Account data (name, password...) does not satisfy the rules."""


def to_stratus_error(exc: AuthError) -> StratusError:
    """The service-edge error for ``exc``: the same message under the right HTTP status."""
    message = str(exc) or exc.__class__.__name__
    if isinstance(exc, AccessDenied):
        return Forbidden(message)
    if isinstance(exc, AuthUnavailable):
        return Unavailable(message)
    if isinstance(exc, AccountNotFound):
        return NotFound(message)
    if isinstance(exc, AccountConflict):
        return Conflict(message)
    if isinstance(exc, InvalidAccountData):
        return ValidationFailed(message)
    return Unauthorized(message)
