"""HTTP routes every service mounts: ``/whoami`` for all callers, ``/accounts`` for site admins.

Account changes go through the service's :class:`~auth.accounts.AccountStore`
(found on the app's :data:`~auth.middleware.AUTHENTICATOR`); the
authenticator's caches are cleared for a changed account so the change
applies at once. Store errors raise ``AccountError`` subclasses, which the
auth middleware turns into 404 / 409 / 422.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from auth.accounts.models import AccountCreate, AccountPublic, IdentityCreate, MembershipCreate
from auth.accounts.store import AccountStore
from auth.authz import require_admin
from auth.middleware import AUTHENTICATOR
from auth.principal import Role
from auth.request import principal_of
from core.app import RouteSpec
from core.errors import Unavailable
from core.http import json_response, read_json

T = TypeVar("T")


class WhoAmI(BaseModel):
    account: str
    identity: str
    method: str
    groups: list[str]
    roles: list[str]
    admin_groups: list[str]
    fqans: list[str]


class AccountList(BaseModel):
    accounts: list[AccountPublic]


class AccountCreateBody(AccountCreate):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]


class IdentityBody(IdentityCreate):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]


class MembershipBody(MembershipCreate):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]


class AccountUpdate(BaseModel):
    """Fields an admin may change; absent fields stay as they are."""

    model_config = ConfigDict(extra="forbid")
    role: Role | None = None
    enabled: bool | None = None
    password: str | None = Field(default=None, repr=False)


async def whoami(request: web.Request) -> web.Response:
    """GET /whoami: the caller as the service sees it (account, identity, groups, roles, FQANs)."""
    p = principal_of(request)
    return json_response(
        WhoAmI(
            account=p.account,
            identity=p.identity,
            method=p.method,
            groups=sorted(p.groups),
            roles=sorted(r.value for r in p.roles),
            admin_groups=sorted(p.admin_groups),
            fqans=list(p.fqans),
        )
    )


def _store(request: web.Request) -> AccountStore:
    require_admin(principal_of(request))
    store = request.app[AUTHENTICATOR].accounts
    if store is None:
        raise Unavailable("this service has no account database (only static API tokens)")
    return store


async def _call(request: web.Request, fn: Callable[..., T], *args: Any) -> T:
    """Run a store call in a thread, then drop cached logins so the change applies at once."""
    result = await asyncio.to_thread(fn, *args)
    request.app[AUTHENTICATOR].forget()
    return result


async def list_accounts(request: web.Request) -> web.Response:
    store = _store(request)
    return json_response(AccountList(accounts=await asyncio.to_thread(store.list_accounts)))


async def create_account(request: web.Request) -> web.Response:
    store = _store(request)
    body = await read_json(request, AccountCreateBody)
    account = await _call(
        request, store.create_account, AccountCreate.model_validate(body.model_dump())
    )
    return json_response(account, status=201)


async def show_account(request: web.Request) -> web.Response:
    store = _store(request)
    return json_response(await asyncio.to_thread(store.get_account, request.match_info["name"]))


async def update_account(request: web.Request) -> web.Response:
    store = _store(request)
    name = request.match_info["name"]
    body = await read_json(request, AccountUpdate)
    account = await asyncio.to_thread(store.get_account, name)
    if body.role is not None:
        account = await _call(request, store.set_role, name, body.role)
    if body.enabled is not None:
        account = await _call(request, store.set_enabled, name, body.enabled)
    if "password" in body.model_fields_set:
        account = await _call(request, store.set_password, name, body.password)
    return json_response(account)


async def delete_account(request: web.Request) -> web.Response:
    store = _store(request)
    await _call(request, store.delete_account, request.match_info["name"])
    return web.Response(status=204)


async def link_identity(request: web.Request) -> web.Response:
    store = _store(request)
    body = await read_json(request, IdentityBody)
    identity = IdentityCreate.model_validate(body.model_dump())
    return json_response(
        await _call(request, store.link_identity, request.match_info["name"], identity)
    )


async def add_membership(request: web.Request) -> web.Response:
    store = _store(request)
    body = await read_json(request, MembershipBody)
    membership = MembershipCreate.model_validate(body.model_dump())
    return json_response(
        await _call(request, store.add_member, request.match_info["name"], membership)
    )


async def remove_membership(request: web.Request) -> web.Response:
    store = _store(request)
    name, group = request.match_info["name"], request.match_info["group"]
    return json_response(await _call(request, store.remove_member, name, group))


def account_routes() -> list[RouteSpec]:
    """``/whoami`` and the ``/accounts`` admin API."""
    tags = ("accounts",)
    return [
        RouteSpec(
            "GET", "/whoami", whoami, "The authenticated caller", response_model=WhoAmI, tags=tags
        ),
        RouteSpec(
            "GET",
            "/accounts",
            list_accounts,
            "List accounts (site admins)",
            response_model=AccountList,
            tags=tags,
        ),
        RouteSpec(
            "POST",
            "/accounts",
            create_account,
            "Create an account (site admins)",
            request_model=AccountCreateBody,
            response_model=AccountPublic,
            status=201,
            tags=tags,
        ),
        RouteSpec(
            "GET",
            "/accounts/{name}",
            show_account,
            "Show an account (site admins)",
            response_model=AccountPublic,
            tags=tags,
        ),
        RouteSpec(
            "PATCH",
            "/accounts/{name}",
            update_account,
            "Change role, enabled flag or password (site admins)",
            request_model=AccountUpdate,
            response_model=AccountPublic,
            tags=tags,
        ),
        RouteSpec(
            "DELETE",
            "/accounts/{name}",
            delete_account,
            "Delete an account (site admins)",
            status=204,
            tags=tags,
        ),
        RouteSpec(
            "POST",
            "/accounts/{name}/identities",
            link_identity,
            "Link a certificate DN or OIDC identity (site admins)",
            request_model=IdentityBody,
            response_model=AccountPublic,
            tags=tags,
        ),
        RouteSpec(
            "POST",
            "/accounts/{name}/groups",
            add_membership,
            "Add to a group (site admins)",
            request_model=MembershipBody,
            response_model=AccountPublic,
            tags=tags,
        ),
        RouteSpec(
            "DELETE",
            "/accounts/{name}/groups/{group:.+}",
            remove_membership,
            "Remove from a group (site admins)",
            response_model=AccountPublic,
            tags=tags,
        ),
    ]
