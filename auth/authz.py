"""Authorisation checks on a :class:`~auth.principal.Principal`.

Each ``require_*`` returns None when allowed and raises ``AccessDenied``
(403) naming the missing right otherwise; the auth middleware turns that
into the JSON error body. A site admin passes every check.
"""

from __future__ import annotations

from auth.errors import AccessDenied
from auth.principal import Principal, Role


def require_admin(principal: Principal) -> None:
    """Only site admins."""
    if not principal.is_admin:
        raise AccessDenied(f"{principal.account} is not a site admin")


def require_role(principal: Principal, role: Role) -> None:
    """The caller holds ``role`` (site admins hold every role)."""
    if not principal.is_admin and role not in principal.roles:
        raise AccessDenied(f"{principal.account} lacks the {role.value} role")


def require_group_member(principal: Principal, group: str) -> None:
    """The caller belongs to ``group`` (from VOMS, OIDC or local membership)."""
    if not principal.is_admin and group not in principal.groups:
        raise AccessDenied(f"{principal.account} is not a member of group {group}")


def require_group_admin(principal: Principal, group: str) -> None:
    """The caller administers ``group`` (or one of its parent groups)."""
    if principal.is_admin:
        return
    parts = group.split("/")
    ancestors = {"/".join(parts[: i + 1]) for i in range(len(parts))}
    if not ancestors & principal.admin_groups:
        raise AccessDenied(f"{principal.account} is not an admin of group {group}")


def require_owner(principal: Principal, owner: str, group: str | None = None) -> None:
    """The caller may act on a resource owned by ``owner`` (and shared with ``group``)."""
    if not principal.can_access(owner, group):
        raise AccessDenied(f"{principal.account} may not access this resource")
