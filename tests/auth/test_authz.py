"""Authorisation helpers."""

from __future__ import annotations

import pytest

from auth.authz import (
    require_admin,
    require_group_admin,
    require_group_member,
    require_owner,
    require_role,
)
from auth.errors import AccessDenied
from auth.principal import Principal, Role

USER = Principal(account="alice", identity="x", method="oidc", groups=frozenset({"vo", "vo/a"}))
GROUP_ADMIN = Principal(
    account="gina",
    identity="y",
    method="x509",
    groups=frozenset({"vo", "vo/a"}),
    roles=frozenset({Role.USER, Role.GROUP_ADMIN}),
    admin_groups=frozenset({"vo/a"}),
)
ADMIN = Principal(account="root", identity="z", method="token", roles=frozenset({Role.SITE_ADMIN}))


def test_require_admin() -> None:
    require_admin(ADMIN)
    with pytest.raises(AccessDenied, match="alice is not a site admin"):
        require_admin(USER)


def test_require_role() -> None:
    require_role(GROUP_ADMIN, Role.GROUP_ADMIN)
    require_role(ADMIN, Role.GROUP_ADMIN)
    with pytest.raises(AccessDenied, match="lacks the group-admin role"):
        require_role(USER, Role.GROUP_ADMIN)


def test_require_group_member() -> None:
    require_group_member(USER, "vo/a")
    require_group_member(ADMIN, "anything")
    with pytest.raises(AccessDenied, match="not a member of group vo/b"):
        require_group_member(USER, "vo/b")


def test_require_group_admin_covers_subgroups() -> None:
    require_group_admin(GROUP_ADMIN, "vo/a")
    require_group_admin(GROUP_ADMIN, "vo/a/sub")
    require_group_admin(ADMIN, "vo")
    with pytest.raises(AccessDenied, match=r"not an admin of group vo$"):
        require_group_admin(GROUP_ADMIN, "vo")
    with pytest.raises(AccessDenied):
        require_group_admin(USER, "vo/a")


def test_require_owner() -> None:
    require_owner(USER, "alice")
    require_owner(USER, "bob", "vo/a")
    require_owner(ADMIN, "bob")
    with pytest.raises(AccessDenied, match="may not access"):
        require_owner(USER, "bob", "other")
