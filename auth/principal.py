"""The authenticated caller of a request, as every service sees it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    """Roles an account can hold. ``SITE_ADMIN`` sees and changes everything."""

    USER = "user"
    GROUP_ADMIN = "group-admin"
    SITE_ADMIN = "site-admin"


@dataclass(frozen=True)
class Principal:
    """Who is calling.

    ``account`` is the owner key stored on every resource the caller creates.
    ``identity`` is what was presented (a DN, ``sub@iss``, a token name).
    ``groups`` come from VOMS FQANs, OIDC group claims or local membership.
    ``admin_groups`` are the groups this caller administers (a subset of
    ``groups``; from a VOMS/OIDC admin role or a local admin membership).
    ``fqans`` are the VOMS FQANs of the credential, in the AC's order.
    ``via`` is the name of the broker that acts for this user (a delegated
    request, :mod:`auth.delegation`; ``method`` is then ``delegated``), or
    None when the user called the service directly.
    """

    account: str
    identity: str
    method: str  # token | x509 | oidc | password | delegated
    groups: frozenset[str] = field(default_factory=frozenset)
    roles: frozenset[Role] = field(default_factory=lambda: frozenset({Role.USER}))
    admin_groups: frozenset[str] = field(default_factory=frozenset)
    fqans: tuple[str, ...] = ()
    via: str | None = None

    @property
    def is_admin(self) -> bool:
        return Role.SITE_ADMIN in self.roles

    def can_access(self, owner: str, group: str | None = None) -> bool:
        """True if a resource of ``owner`` (shared with ``group``) is visible to the caller."""
        return (
            self.is_admin or owner == self.account or (group is not None and group in self.groups)
        )
