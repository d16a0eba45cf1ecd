"""The account store: accounts, linked identities, group memberships, local passwords.

All methods are synchronous and open their own short transaction on the
SQLAlchemy ``Engine`` the caller passes in; call them from a thread
(``asyncio.to_thread``) in request handlers. Every method either completes
or changes nothing. Errors: ``AccountNotFound`` (404), ``AccountConflict``
(409), ``InvalidAccountData`` (422), ``CredentialRejected`` (401, wrong
password). Return values are ``...Public`` models, never table rows.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import delete, func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, select

from auth.accounts.models import (
    ACCOUNT_NAME_PATTERN,
    Account,
    AccountCreate,
    AccountPublic,
    Identity,
    IdentityCreate,
    IdentityKind,
    IdentityPublic,
    Membership,
    MembershipCreate,
    MembershipPublic,
)
from auth.errors import (
    AccountConflict,
    AccountNotFound,
    CredentialRejected,
    InvalidAccountData,
)
from auth.passwords import hash_password, verify_password
from auth.principal import Role
from core.db import utcnow

AUTH_TABLES = (Account.__table__, Identity.__table__, Membership.__table__)  # type: ignore[attr-defined]


def local_identity(username: str) -> str:
    """The identity key of a local password login."""
    return f"local:{username}"


def suggest_account_name(text: str) -> str:
    """A valid account name made from ``text`` (a CN, a username): ``"Jane Doe" -> "jane-doe"``."""
    name = re.sub(r"[^a-z0-9._-]+", "-", text.lower())
    name = re.sub(r"-{2,}", "-", name).strip("-._")[:48]
    return name or "user"


class AccountStore:
    """Accounts and identities over ``engine`` (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine, *, min_password_length: int = 12) -> None:
        self._engine = engine
        self._min_password_length = min_password_length

    def create_tables(self) -> None:
        """Create the ``auth_*`` tables that do not exist yet."""
        SQLModel.metadata.create_all(self._engine, tables=list(AUTH_TABLES))

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with Session(self._engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    # --- reading ---------------------------------------------------------

    def _public(self, session: Session, account: Account) -> AccountPublic:
        assert account.id is not None
        identities = session.exec(select(Identity).where(Identity.account_id == account.id)).all()
        memberships = session.exec(
            select(Membership).where(Membership.account_id == account.id)
        ).all()
        return AccountPublic(
            id=account.id,
            name=account.name,
            display_name=account.display_name,
            email=account.email,
            role=Role(account.role),
            enabled=account.enabled,
            created_at=account.created_at,
            has_password=account.password_hash is not None,
            identities=[
                IdentityPublic(
                    identity=i.identity,
                    kind=IdentityKind(i.kind),
                    created_at=i.created_at,
                    last_login_at=i.last_login_at,
                )
                for i in sorted(identities, key=lambda i: i.identity)
            ],
            memberships=[
                MembershipPublic(group=m.group, admin=m.admin)
                for m in sorted(memberships, key=lambda m: m.group)
            ],
        )

    def _get(self, session: Session, name: str) -> Account:
        account = session.exec(select(Account).where(Account.name == name)).first()
        if account is None:
            raise AccountNotFound(f"no account named {name!r}")
        return account

    def get_account(self, name: str) -> AccountPublic:
        """The account ``name``; ``AccountNotFound`` if there is none."""
        with self._session() as session:
            return self._public(session, self._get(session, name))

    def list_accounts(self) -> list[AccountPublic]:
        """Every account, by name."""
        with self._session() as session:
            rows = session.exec(select(Account).order_by(Account.name)).all()
            return [self._public(session, a) for a in rows]

    def count_accounts(self) -> int:
        """How many accounts exist."""
        with self._session() as session:
            return int(session.exec(select(func.count()).select_from(Account)).one())

    def find_account(self, identity: str) -> AccountPublic | None:
        """The account ``identity`` is linked to, or None."""
        with self._session() as session:
            link = session.exec(select(Identity).where(Identity.identity == identity)).first()
            if link is None:
                return None
            account = session.get(Account, link.account_id)
            return None if account is None else self._public(session, account)

    def group_members(self, group: str) -> list[str]:
        """Names of the accounts that are local members of ``group``."""
        with self._session() as session:
            rows = session.exec(
                select(Account.name)
                .join(Membership, Membership.account_id == Account.id)  # type: ignore[arg-type]
                .where(Membership.group == group)
                .order_by(Account.name)
            ).all()
            return list(rows)

    # --- writing ---------------------------------------------------------

    def _check_password(self, password: str) -> None:
        if len(password) < self._min_password_length:
            raise InvalidAccountData(
                f"password shorter than {self._min_password_length} characters"
            )
        if len(password.encode()) > 1024:
            raise InvalidAccountData("password longer than 1024 bytes")

    def create_account(self, data: AccountCreate) -> AccountPublic:
        """Create an account (and its ``local:<name>`` identity if a password is given).

        ``AccountConflict`` if the name (or that local identity) is taken.
        """
        if not re.fullmatch(ACCOUNT_NAME_PATTERN, data.name):
            raise InvalidAccountData(f"invalid account name {data.name!r}")
        password_hash = None
        if data.password is not None:
            self._check_password(data.password)
            password_hash = hash_password(data.password)
        try:
            with self._session() as session:
                account = Account(
                    name=data.name,
                    display_name=data.display_name,
                    email=data.email,
                    role=data.role,
                    enabled=data.enabled,
                    password_hash=password_hash,
                )
                session.add(account)
                session.flush()
                assert account.id is not None
                if password_hash is not None:
                    session.add(
                        Identity(
                            identity=local_identity(data.name),
                            kind=IdentityKind.LOCAL,
                            account_id=account.id,
                        )
                    )
                session.flush()
                return self._public(session, account)
        except IntegrityError as exc:
            raise AccountConflict(f"account {data.name!r} already exists") from exc

    def delete_account(self, name: str) -> None:
        """Delete ``name`` with its identities and memberships; missing: ``AccountNotFound``."""
        with self._session() as session:
            account = self._get(session, name)
            session.exec(delete(Identity).where(Identity.account_id == account.id))  # type: ignore[arg-type]
            session.exec(delete(Membership).where(Membership.account_id == account.id))  # type: ignore[arg-type]
            session.delete(account)

    def set_role(self, name: str, role: Role) -> AccountPublic:
        """Give ``name`` the role ``role``."""
        with self._session() as session:
            account = self._get(session, name)
            account.role = role
            session.add(account)
            session.flush()
            return self._public(session, account)

    def set_enabled(self, name: str, enabled: bool) -> AccountPublic:
        """Enable or disable ``name``; a disabled account cannot log in (403)."""
        with self._session() as session:
            account = self._get(session, name)
            account.enabled = enabled
            session.add(account)
            session.flush()
            return self._public(session, account)

    def link_identity(self, name: str, identity: IdentityCreate) -> AccountPublic:
        """Link ``identity`` to ``name``; ``AccountConflict`` if it is linked to any account."""
        try:
            with self._session() as session:
                account = self._get(session, name)
                assert account.id is not None
                session.add(
                    Identity(identity=identity.identity, kind=identity.kind, account_id=account.id)
                )
                session.flush()
                return self._public(session, account)
        except IntegrityError as exc:
            raise AccountConflict("that identity is already linked to an account") from exc

    def unlink_identity(self, identity: str) -> None:
        """Remove the link of ``identity``; ``AccountNotFound`` if it is not linked."""
        with self._session() as session:
            link = session.exec(select(Identity).where(Identity.identity == identity)).first()
            if link is None:
                raise AccountNotFound("that identity is not linked to any account")
            session.delete(link)

    def add_member(self, name: str, membership: MembershipCreate) -> AccountPublic:
        """Make ``name`` a member (or admin) of a group; adding again updates ``admin``."""
        with self._session() as session:
            account = self._get(session, name)
            assert account.id is not None
            row = session.exec(
                select(Membership).where(
                    Membership.account_id == account.id, Membership.group == membership.group
                )
            ).first()
            if row is None:
                row = Membership(
                    group=membership.group, admin=membership.admin, account_id=account.id
                )
            else:
                row.admin = membership.admin
            session.add(row)
            session.flush()
            return self._public(session, account)

    def remove_member(self, name: str, group: str) -> AccountPublic:
        """Remove ``name`` from ``group``; not a member: ``AccountNotFound``."""
        with self._session() as session:
            account = self._get(session, name)
            row = session.exec(
                select(Membership).where(
                    Membership.account_id == account.id, Membership.group == group
                )
            ).first()
            if row is None:
                raise AccountNotFound(f"{name!r} is not a member of {group!r}")
            session.delete(row)
            session.flush()
            return self._public(session, account)

    # --- passwords ---------------------------------------------------------

    def set_password(self, name: str, password: str | None) -> AccountPublic:
        """Set (or with None, remove) the local password of ``name``."""
        password_hash = None
        if password is not None:
            self._check_password(password)
            password_hash = hash_password(password)
        with self._session() as session:
            account = self._get(session, name)
            assert account.id is not None
            account.password_hash = password_hash
            session.add(account)
            key = local_identity(name)
            link = session.exec(select(Identity).where(Identity.identity == key)).first()
            if password_hash is not None and link is None:
                session.add(Identity(identity=key, kind=IdentityKind.LOCAL, account_id=account.id))
            elif password_hash is None and link is not None:
                session.delete(link)
            session.flush()
            return self._public(session, account)

    def verify_password(self, username: str, password: str) -> AccountPublic:
        """The account for a correct ``username``/``password``; ``CredentialRejected`` otherwise.

        The message is the same for an unknown user and a wrong password, and
        a hash is computed either way (no user enumeration by timing).
        """
        with self._session() as session:
            account = session.exec(select(Account).where(Account.name == username)).first()
            stored = account.password_hash if account is not None else None
            ok = verify_password(password, stored)
            if not ok or account is None:
                raise CredentialRejected("wrong username or password")
            return self._public(session, account)

    # --- login --------------------------------------------------------------

    def login(
        self,
        identity: str,
        kind: IdentityKind,
        *,
        register: bool,
        suggested_name: str,
        display_name: str = "",
        role: Role = Role.USER,
    ) -> AccountPublic | None:
        """The account of a VERIFIED ``identity``, creating it when ``register`` is true.

        Returns None when the identity is unknown and ``register`` is false.
        A new account is named ``suggested_name`` (made valid), or that name
        with ``-2``, ``-3``... if taken. Concurrent first logins of the same
        identity end with one account. Records the login time.
        """
        for _ in range(5):
            with self._session() as session:
                link = session.exec(select(Identity).where(Identity.identity == identity)).first()
                if link is not None:
                    link.last_login_at = utcnow()
                    session.add(link)
                    account = session.get(Account, link.account_id)
                    if account is None:  # pragma: no cover - FK cascade prevents this
                        raise AccountNotFound("identity linked to a deleted account")
                    session.flush()
                    return self._public(session, account)
            if not register:
                return None
            try:
                return self._register(identity, kind, suggested_name, display_name, role)
            except IntegrityError:
                continue  # lost a race: the identity or the name appeared meanwhile; look again
        raise AccountConflict("could not register the identity; try again")

    def _register(
        self, identity: str, kind: IdentityKind, suggested: str, display_name: str, role: Role
    ) -> AccountPublic:
        base = suggest_account_name(suggested)
        with self._session() as session:
            taken = set(
                session.exec(
                    select(Account.name).where(
                        (Account.name == base) | Account.name.startswith(base + "-")
                    )
                ).all()
            )
            name = base
            counter = 2
            while name in taken:
                name = f"{base}-{counter}"
                counter += 1
                if counter > 1000:
                    name = f"{base}-{secrets.token_hex(4)}"
            account = Account(name=name, display_name=display_name[:256], role=role)
            session.add(account)
            session.flush()
            assert account.id is not None
            session.add(
                Identity(
                    identity=identity,
                    kind=kind,
                    account_id=account.id,
                    last_login_at=utcnow(),
                )
            )
            session.flush()
            return self._public(session, account)
