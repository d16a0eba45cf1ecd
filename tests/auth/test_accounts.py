"""The account store on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from auth.accounts import (
    AccountCreate,
    AccountStore,
    IdentityCreate,
    IdentityKind,
    MembershipCreate,
    suggest_account_name,
)
from auth.errors import (
    AccountConflict,
    AccountNotFound,
    CredentialRejected,
    InvalidAccountData,
)
from auth.principal import Role
from core.db import make_engine

DN = "/DC=org/DC=test/O=People/CN=Alice Smith"


@pytest.fixture
def accounts(database_url: str) -> Iterator[AccountStore]:
    engine = make_engine(database_url)
    store = AccountStore(engine)
    store.create_tables()
    yield store
    engine.dispose()


def test_create_get_list_delete(accounts: AccountStore) -> None:
    created = accounts.create_account(AccountCreate(name="alice", display_name="Alice"))
    assert (created.name, created.role, created.enabled, created.has_password) == (
        "alice",
        Role.USER,
        True,
        False,
    )
    assert created.created_at.tzinfo is not None
    assert accounts.get_account("alice") == created
    accounts.create_account(AccountCreate(name="bob", role=Role.SITE_ADMIN))
    assert [a.name for a in accounts.list_accounts()] == ["alice", "bob"]
    accounts.delete_account("alice")
    with pytest.raises(AccountNotFound, match="no account named 'alice'"):
        accounts.get_account("alice")
    assert accounts.count_accounts() == 1


def test_duplicate_name_conflicts(accounts: AccountStore) -> None:
    accounts.create_account(AccountCreate(name="alice"))
    with pytest.raises(AccountConflict, match="already exists"):
        accounts.create_account(AccountCreate(name="alice"))
    assert accounts.count_accounts() == 1


@pytest.mark.parametrize("name", ["", "Alice", "-x", "a b", "x" * 65, "ünï"])
def test_invalid_names_refused(name: str) -> None:
    with pytest.raises(ValidationError):
        AccountCreate(name=name)


def test_identity_links(accounts: AccountStore) -> None:
    accounts.create_account(AccountCreate(name="alice"))
    accounts.create_account(AccountCreate(name="bob"))
    linked = accounts.link_identity("alice", IdentityCreate(identity=DN, kind=IdentityKind.X509))
    accounts.link_identity(
        "alice", IdentityCreate(identity="sub@https://idp", kind=IdentityKind.OIDC)
    )
    assert [i.identity for i in accounts.get_account("alice").identities] == [DN, "sub@https://idp"]
    assert linked.identities[0].kind is IdentityKind.X509
    found = accounts.find_account("sub@https://idp")
    assert found is not None and found.name == "alice"
    with pytest.raises(AccountConflict, match="already linked"):
        accounts.link_identity("bob", IdentityCreate(identity=DN, kind=IdentityKind.X509))
    accounts.unlink_identity(DN)
    assert accounts.find_account(DN) is None
    with pytest.raises(AccountNotFound):
        accounts.unlink_identity(DN)
    with pytest.raises(AccountNotFound):
        accounts.link_identity("nobody", IdentityCreate(identity="x@y", kind=IdentityKind.OIDC))


def test_memberships(accounts: AccountStore) -> None:
    accounts.create_account(AccountCreate(name="alice"))
    accounts.add_member("alice", MembershipCreate(group="escience/cloud"))
    account = accounts.add_member("alice", MembershipCreate(group="ops", admin=True))
    assert account.groups == {"escience/cloud", "ops"}
    assert account.admin_groups == {"ops"}
    account = accounts.add_member("alice", MembershipCreate(group="ops", admin=False))
    assert account.admin_groups == frozenset()
    assert accounts.group_members("ops") == ["alice"]
    assert accounts.remove_member("alice", "ops").groups == {"escience/cloud"}
    with pytest.raises(AccountNotFound, match="not a member"):
        accounts.remove_member("alice", "ops")
    with pytest.raises(ValidationError):
        MembershipCreate(group="bad group")


def test_roles_and_disabling(accounts: AccountStore) -> None:
    accounts.create_account(AccountCreate(name="alice"))
    assert accounts.set_role("alice", Role.GROUP_ADMIN).role is Role.GROUP_ADMIN
    assert accounts.set_enabled("alice", False).enabled is False


def test_passwords(accounts: AccountStore) -> None:
    created = accounts.create_account(AccountCreate(name="carol", password="correct horse battery"))
    assert created.has_password
    assert [i.identity for i in created.identities] == ["local:carol"]
    assert accounts.verify_password("carol", "correct horse battery").name == "carol"
    for user, password in [("carol", "wrong password!"), ("nobody", "correct horse battery")]:
        with pytest.raises(CredentialRejected, match=r"^wrong username or password$"):
            accounts.verify_password(user, password)
    with pytest.raises(InvalidAccountData, match="shorter than 12"):
        accounts.set_password("carol", "short")
    accounts.set_password("carol", "another long passphrase")
    with pytest.raises(CredentialRejected):
        accounts.verify_password("carol", "correct horse battery")
    removed = accounts.set_password("carol", None)
    assert not removed.has_password and removed.identities == []
    with pytest.raises(CredentialRejected):
        accounts.verify_password("carol", "another long passphrase")
    with pytest.raises(InvalidAccountData):
        accounts.create_account(AccountCreate(name="dave", password="x"))
    assert accounts.count_accounts() == 1


def test_login_registers_once_and_names_from_identity(accounts: AccountStore) -> None:
    assert (
        accounts.login(DN, IdentityKind.X509, register=False, suggested_name="Alice Smith") is None
    )
    assert accounts.count_accounts() == 0
    first = accounts.login(DN, IdentityKind.X509, register=True, suggested_name="Alice Smith")
    assert first is not None and first.name == "alice-smith"
    again = accounts.login(DN, IdentityKind.X509, register=True, suggested_name="Alice Smith")
    assert again is not None and again.id == first.id
    assert again.identities[0].last_login_at is not None
    # Another person with the same CN gets a distinct account.
    other = accounts.login(
        "/DC=org/DC=other/CN=Alice Smith",
        IdentityKind.X509,
        register=True,
        suggested_name="Alice Smith",
    )
    assert other is not None and other.name == "alice-smith-2"
    assert accounts.count_accounts() == 2


def test_concurrent_first_logins_make_one_account(accounts: AccountStore) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def login() -> None:
        try:
            account = accounts.login(DN, IdentityKind.X509, register=True, suggested_name="Alice")
            assert account is not None
            results.append(account.name)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=login) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert set(results) == {"alice"}
    assert accounts.count_accounts() == 1


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Alice Smith", "alice-smith"),
        ("Jane.Doe", "jane.doe"),
        ("!!!", "user"),
        ("Ünï Cödé", "n-c-d"),
    ],
)
def test_suggest_account_name(text: str, name: str) -> None:
    assert suggest_account_name(text) == name
