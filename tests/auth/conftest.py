"""Fixtures for the auth tests: a throwaway grid PKI, real proxies, servers on 127.0.0.1."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy.engine import Engine

from auth.accounts import AccountStore
from auth.authz import require_admin
from auth.middleware import principal_of
from core.app import SERVER_LIMITS, RouteSpec, make_app
from core.db import make_engine
from tests.auth.fedworld import FedWorld
from tests.auth.fedworld import build as build_fed_world
from tests.grid_world import FQANS, VO, GridWorld, Proxies

__all__ = ["FQANS", "VO", "GridWorld", "Proxies"]  # re-exported for the auth test modules


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A fresh SQLite database with the auth tables."""
    engine = make_engine(f"sqlite:///{tmp_path / 'auth.db'}")
    AccountStore(engine).create_tables()
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> AccountStore:
    return AccountStore(engine)


# --- a tiny service -----------------------------------------------------------


async def whoami(request: web.Request) -> web.Response:
    p = principal_of(request)
    return web.json_response(
        {
            "account": p.account,
            "identity": p.identity,
            "method": p.method,
            "groups": sorted(p.groups),
            "admin_groups": sorted(p.admin_groups),
            "roles": sorted(r.value for r in p.roles),
            "fqans": list(p.fqans),
        }
    )


async def ping(_request: web.Request) -> web.Response:
    return web.json_response({"pong": True})


async def admin_only(request: web.Request) -> web.Response:
    require_admin(principal_of(request))
    return web.json_response({"ok": True})


ROUTES = [
    RouteSpec("GET", "/whoami", whoami, "who am I"),
    RouteSpec("GET", "/ping", ping, "liveness", public=True),
    RouteSpec("GET", "/admin", admin_only, "admins only"),
]


def tiny_app(middlewares: list[object]) -> web.Application:
    return make_app(ROUTES, title="auth test service", middlewares=middlewares)


Starter = Callable[[web.Application, ssl.SSLContext | None], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Starter]:
    """Start apps on 127.0.0.1 (port 0); yields ``start(app, ssl_context) -> base URL``."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application, context: ssl.SSLContext | None) -> str:
        runner = web.AppRunner(app, **SERVER_LIMITS)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        scheme = "https" if context is not None else "http"
        return f"{scheme}://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def client_context(grid: GridWorld, cert_file: Path | None) -> ssl.SSLContext:
    """A client context trusting the test CA, presenting ``cert_file`` (proxy or cert+key)."""
    context = ssl.create_default_context(cafile=str(grid.ca.cert_path))
    if cert_file is not None:
        context.load_cert_chain(str(cert_file))
    return context


@pytest.fixture(scope="session")
def fed(tmp_path_factory: pytest.TempPathFactory) -> FedWorld:
    """The broker's PKI for the delegation tests (``tests/auth/fedworld.py``)."""
    return build_fed_world(tmp_path_factory.mktemp("fedpki"))
