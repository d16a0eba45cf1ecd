"""Accounts: who owns resources, which identities log in as whom, group membership.

See :mod:`auth.accounts.models` for the tables and API shapes and
:mod:`auth.accounts.store` for :class:`AccountStore`.
"""

from auth.accounts.models import (
    AccountCreate,
    AccountPublic,
    IdentityCreate,
    IdentityKind,
    IdentityPublic,
    MembershipCreate,
    MembershipPublic,
)
from auth.accounts.store import AccountStore, local_identity, suggest_account_name

__all__ = [
    "AccountCreate",
    "AccountPublic",
    "AccountStore",
    "IdentityCreate",
    "IdentityKind",
    "IdentityPublic",
    "MembershipCreate",
    "MembershipPublic",
    "local_identity",
    "suggest_account_name",
]
