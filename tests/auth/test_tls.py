"""The TLS server context and reading the client chain, with real proxies over real TLS."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from cryptography import x509

from auth.config import CrlPolicy
from auth.dn import grid_dn
from auth.tls import VERIFY_ALLOW_PROXY_CERTS, peer_certificates, server_ssl_context
from tests.auth.conftest import GridWorld, Proxies, Starter, client_context
from tests.auth.pki import forge_proxy, write_proxy_file

ALICE = "/DC=org/DC=test/O=People/CN=Alice Smith"


async def chain_handler(request: web.Request) -> web.Response:
    peer = peer_certificates(request.transport.get_extra_info("ssl_object"))  # type: ignore[union-attr]
    if peer is None:
        return web.json_response({"peer": None})
    chain = [grid_dn(x509.load_der_x509_certificate(c).subject) for c in peer.chain or ()]
    leaf = grid_dn(x509.load_der_x509_certificate(peer.leaf).subject)
    return web.json_response({"leaf": leaf, "chain": chain})


def chain_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/chain", chain_handler)
    return app


def context_for(grid: GridWorld, ca_dir: Path, **kwargs: object) -> ssl.SSLContext:
    return server_ssl_context(grid.server.cert_path, grid.server.key_path, ca_dir, **kwargs)  # type: ignore[arg-type]


async def get_chain(url: str, grid: GridWorld, cert_file: Path | None) -> dict[str, object]:
    async with httpx.AsyncClient(verify=client_context(grid, cert_file)) as client:
        response = await client.get(url + "/chain")
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]


def _raw_request(port: int, context: ssl.SSLContext) -> bytes:
    request = b"GET /chain HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(request)
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
        return data


async def refused(url: str, grid: GridWorld, cert_file: Path | None) -> None:
    """Assert that a client presenting ``cert_file`` gets no HTTP response at all.

    The handshake refuses it. asyncio drops the TLS alert when it aborts the
    connection, so the client only sees the connection end (an SSLError or
    EOF), never an HTTP status; see auth.tls.
    """
    port = int(url.rsplit(":", 1)[1])
    try:
        answer = await asyncio.to_thread(_raw_request, port, client_context(grid, cert_file))
    except (ssl.SSLError, ConnectionResetError) as exc:
        answer = repr(exc).encode()
    assert not answer.startswith(b"HTTP/"), answer[:100]
    async with httpx.AsyncClient(verify=client_context(grid, cert_file)) as client:
        with pytest.raises(httpx.TransportError):
            await client.get(url + "/chain")


def test_context_flags(grid: GridWorld) -> None:
    strict = context_for(grid, grid.ca_dir)
    assert strict.verify_mode == ssl.CERT_OPTIONAL
    assert strict.verify_flags & VERIFY_ALLOW_PROXY_CERTS
    assert strict.verify_flags & ssl.VERIFY_CRL_CHECK_CHAIN == ssl.VERIFY_CRL_CHECK_CHAIN
    assert strict.minimum_version == ssl.TLSVersion.TLSv1_2
    # only the CA directory is trusted for clients, not the system store
    assert [c["subject"] for c in strict.get_ca_certs()] == []  # capath: loaded lazily
    relaxed = context_for(
        grid,
        grid.ca_dir,
        crl_policy=CrlPolicy.IF_PRESENT,
        allow_proxies=False,
        require_client_cert=True,
    )
    assert relaxed.verify_mode == ssl.CERT_REQUIRED
    assert not relaxed.verify_flags & VERIFY_ALLOW_PROXY_CERTS
    assert not relaxed.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF


async def test_proxy_chain_is_read_from_the_connection(
    grid: GridWorld, proxies: Proxies, serve: Starter
) -> None:
    url = await serve(chain_app(), context_for(grid, grid.ca_dir))
    body = await get_chain(url, grid, proxies.alice)
    assert body["leaf"].startswith(ALICE + "/CN=")  # type: ignore[union-attr]
    assert body["chain"][1:] == [ALICE, "/DC=org/DC=test/CN=Test CA"]  # type: ignore[index]


async def test_proxy_of_proxy_over_tls(grid: GridWorld, proxies: Proxies, serve: Starter) -> None:
    url = await serve(chain_app(), context_for(grid, grid.ca_dir))
    body = await get_chain(url, grid, proxies.alice_voms_of_proxy)
    chain = body["chain"]
    assert isinstance(chain, list) and len(chain) == 4
    assert chain[2:] == [ALICE, "/DC=org/DC=test/CN=Test CA"]


async def test_client_without_certificate_may_connect(grid: GridWorld, serve: Starter) -> None:
    url = await serve(chain_app(), context_for(grid, grid.ca_dir))
    assert await get_chain(url, grid, None) == {"peer": None}


async def test_required_client_certificate(grid: GridWorld, serve: Starter) -> None:
    url = await serve(chain_app(), context_for(grid, grid.ca_dir, require_client_cert=True))
    await refused(url, grid, None)


async def test_handshake_refusals(
    grid: GridWorld, proxies: Proxies, serve: Starter, tmp_path: Path
) -> None:
    url = await serve(chain_app(), context_for(grid, grid.ca_dir))
    await refused(url, grid, grid.expired.pem_with_key(tmp_path / "expired.pem"))
    await refused(url, grid, grid.wrong_ca_user.pem_with_key(tmp_path / "wrong.pem"))
    await refused(url, grid, proxies.carol)  # revoked: strict CRL check in the handshake
    forged, key = forge_proxy(grid.bob, ALICE + "/CN=31337", issuer_name=grid.alice.cert.subject)
    await refused(url, grid, write_proxy_file(tmp_path / "forged", forged, key, [grid.alice.cert]))
    forged2, key2 = forge_proxy(grid.bob, ALICE + "/CN=31337")
    await refused(url, grid, write_proxy_file(tmp_path / "forged2", forged2, key2, [grid.bob.cert]))
    # and after all that, a good proxy still gets in
    assert (await get_chain(url, grid, proxies.alice))["chain"]


async def test_strict_crl_policy_refuses_a_ca_without_crl(
    grid: GridWorld, proxies: Proxies, serve: Starter
) -> None:
    strict = await serve(chain_app(), context_for(grid, grid.ca_dir_no_crl))
    await refused(strict, grid, proxies.alice)
    relaxed = await serve(
        chain_app(), context_for(grid, grid.ca_dir_no_crl, crl_policy=CrlPolicy.IF_PRESENT)
    )
    assert (await get_chain(relaxed, grid, proxies.alice))["chain"]


async def test_proxies_refused_when_not_allowed(
    grid: GridWorld, proxies: Proxies, serve: Starter, tmp_path: Path
) -> None:
    url = await serve(chain_app(), context_for(grid, grid.ca_dir, allow_proxies=False))
    await refused(url, grid, proxies.alice)
    plain = grid.alice.pem_with_key(tmp_path / "alice.pem")
    assert (await get_chain(url, grid, plain))["chain"] == [ALICE, "/DC=org/DC=test/CN=Test CA"]


def test_resumed_session_has_no_chain(grid: GridWorld, proxies: Proxies) -> None:
    """OpenSSL keeps no verified chain for a resumed session: peer_certificates says so.

    server_ssl_context disables session tickets, which makes resumption rare;
    this test uses a context with tickets to force one.
    """
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(grid.server.cert_path, grid.server.key_path)
    server.load_verify_locations(capath=str(grid.ca_dir))
    server.verify_mode = ssl.CERT_OPTIONAL
    server.verify_flags |= VERIFY_ALLOW_PROXY_CERTS
    server.maximum_version = ssl.TLSVersion.TLSv1_2  # the ticket comes within the handshake
    client = client_context(grid, proxies.alice)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[object] = []

    def accept_twice() -> None:
        for _ in range(2):
            conn, _addr = listener.accept()
            with server.wrap_socket(conn, server_side=True) as tls:
                seen.append((tls.session_reused, peer_certificates(tls)))
                tls.recv(1)

    import threading

    thread = threading.Thread(target=accept_twice)
    thread.start()
    session = None
    for _ in range(2):
        with client.wrap_socket(
            socket.create_connection(("127.0.0.1", port)),
            server_hostname="127.0.0.1",
            session=session,
        ) as tls:
            tls.sendall(b"x")
            session = tls.session
    thread.join(timeout=10)
    listener.close()
    (reused1, first), (reused2, second) = seen  # type: ignore[misc]
    assert not reused1 and reused2
    assert first is not None and first.chain is not None and len(first.chain) == 3
    assert second is not None and second.chain is None and second.leaf == first.leaf


def test_no_ssl_object_no_peer() -> None:
    assert peer_certificates(None) is None
