"""Account tables and their API shapes (``XBase`` / ``X(table=True)`` / ``XCreate`` / ``XPublic``).

Tables never leave :mod:`auth.accounts.store`; callers get the ``...Public``
models. Table names carry an ``auth_`` prefix so they never collide with
another service's tables in the same database.

* :class:`Account` — one per person or robot; ``name`` is the owner key
  stored on resources, immutable once created.
* :class:`Identity` — a credential identity linked to an account: a DN
  (``/DC=org/.../CN=Jane``), ``sub@iss`` for OIDC, or ``local:<name>`` for a
  password; each identity belongs to at most one account, an account may
  have several.
* :class:`Membership` — local group membership, optionally as group admin.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum

from pydantic import field_validator
from sqlalchemy import Column, ForeignKey, Integer, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from auth.principal import Role
from core.db import UTCDateTime, utcnow

ACCOUNT_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
GROUP_NAME_PATTERN = r"^[A-Za-z0-9._:@+-]+(/[A-Za-z0-9._:@+-]+)*$"


class IdentityKind(StrEnum):
    """How an identity is proved."""

    X509 = "x509"  # certificate or proxy: the end-entity DN
    OIDC = "oidc"  # sub@iss
    LOCAL = "local"  # local:<username>, password login
    FEDERATED = "federated"  # federated:<broker>:<account>, a broker's local user (delegation)


class AccountBase(SQLModel):
    name: str = Field(max_length=64, sa_column_kwargs={"unique": True}, index=False)
    display_name: str = Field(default="", max_length=256)
    email: str | None = Field(default=None, max_length=256)
    role: Role = Field(default=Role.USER, sa_type=String(32))
    enabled: bool = True


class Account(AccountBase, table=True):
    __tablename__ = "auth_account"

    id: int | None = Field(default=None, primary_key=True)
    password_hash: str | None = Field(default=None, max_length=256)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AccountCreate(SQLModel):
    """A new account; ``password`` (optional) enables local login as ``local:<name>``."""

    name: str
    display_name: str = Field(default="", max_length=256)
    email: str | None = Field(default=None, max_length=256)
    role: Role = Role.USER
    enabled: bool = True
    password: str | None = Field(default=None, repr=False)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not re.fullmatch(ACCOUNT_NAME_PATTERN, value):
            raise ValueError(
                "account names are 1-64 of a-z 0-9 . _ - starting with a letter or digit"
            )
        return value


class IdentityBase(SQLModel):
    identity: str = Field(max_length=1024, sa_column_kwargs={"unique": True})
    kind: IdentityKind = Field(sa_type=String(16))


class Identity(IdentityBase, table=True):
    __tablename__ = "auth_identity"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("auth_account.id", ondelete="CASCADE"), index=True, nullable=False
        )
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_login_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class IdentityCreate(IdentityBase):
    """An identity to link to an account."""

    @field_validator("identity")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("identity must not be blank")
        return value


class IdentityPublic(IdentityBase):
    created_at: datetime
    last_login_at: datetime | None = None


class MembershipBase(SQLModel):
    group: str = Field(max_length=200)
    admin: bool = False


class Membership(MembershipBase, table=True):
    __tablename__ = "auth_membership"
    __table_args__ = (UniqueConstraint("account_id", "group", name="uq_auth_membership"),)

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("auth_account.id", ondelete="CASCADE"), index=True, nullable=False
        )
    )


class MembershipCreate(MembershipBase):
    """A local group membership to add."""

    @field_validator("group")
    @classmethod
    def _valid_group(cls, value: str) -> str:
        if len(value) > 200 or not re.fullmatch(GROUP_NAME_PATTERN, value):
            raise ValueError("group names are path-like: vo/sub, of A-Z a-z 0-9 . _ : @ + -")
        return value


class MembershipPublic(MembershipBase):
    pass


class AccountPublic(AccountBase):
    """An account as the API shows it: no password hash."""

    id: int
    created_at: datetime
    has_password: bool = False
    identities: list[IdentityPublic] = Field(default_factory=list)
    memberships: list[MembershipPublic] = Field(default_factory=list)

    @property
    def groups(self) -> frozenset[str]:
        return frozenset(m.group for m in self.memberships)

    @property
    def admin_groups(self) -> frozenset[str]:
        return frozenset(m.group for m in self.memberships if m.admin)
