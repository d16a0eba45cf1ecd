"""Static API tokens listed (as SHA-256 hashes) in a service config.

The interim authentication of the site agent: ``Authorization: Bearer <token>``
is hashed and looked up; the config never stores the token itself.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from auth.errors import CredentialRejected
from auth.principal import Principal, Role


def hash_token(token: str) -> str:
    """The ``sha256:<hex>`` form stored in configs."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TokenEntry:
    """One configured token: its hash and the account it logs in as."""

    token_hash: str
    account: str
    admin: bool = False
    groups: tuple[str, ...] = ()


class TokenAuthenticator:
    """Maps bearer tokens to principals by comparing hashes in constant time."""

    def __init__(self, entries: Iterable[TokenEntry]) -> None:
        self._entries = list(entries)

    def authenticate(self, token: str) -> Principal:
        """The principal for ``token``; ``CredentialRejected`` if it is not configured."""
        digest = hash_token(token)
        match = None
        for entry in self._entries:
            # Compare against every entry so timing does not reveal which one matched.
            if hmac.compare_digest(entry.token_hash, digest):
                match = entry
        if match is None:
            raise CredentialRejected("unknown or revoked API token")
        roles = {Role.USER} | ({Role.SITE_ADMIN} if match.admin else set())
        return Principal(
            account=match.account,
            identity=f"token:{match.account}",
            method="token",
            groups=frozenset(match.groups),
            roles=frozenset(roles),
        )
