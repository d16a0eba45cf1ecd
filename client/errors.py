"""Client-side errors.

Exception tree::

    ClientError                 root
    ├── ApiError                the service answered with a JSON error (status, code, message)
    ├── ConnectionFailed        the service could not be reached
    └── ClientConfigError       the user's config file or options are wrong
"""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Root of errors raised by the SDK and the CLI."""


class ApiError(ClientError):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{message} (HTTP {status}, {code})")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class ConnectionFailed(ClientError):
    pass


class ClientConfigError(ClientError):
    pass
