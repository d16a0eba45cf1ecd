"""Authentication cost: requests/s with and without auth on one endpoint, and cold costs.

Usage::

    python benchmarks/auth.py                  # markdown table on stdout, about a minute
    python benchmarks/auth.py --requests 4000 --concurrency 16 --batches 10
    python benchmarks/auth.py --write-doc      # also update docs/benchmarks.md

The service runs in its own process (aiohttp, the real auth middleware,
SQLite accounts) on 127.0.0.1 with an HTTP and an HTTPS listener; the OIDC
issuer (discovery + JWKS) runs beside it. The load comes from this process
over keep-alive connections (aiohttp client, a fixed number of requests).
Each authenticated scenario is compared with the same handler on a public
route over the same transport, in alternating batches of the same run, so
that background load on the machine hits both sides alike. Credentials are
a throwaway CA, a user certificate, a proxy made by the real
``grid-proxy-init`` (and a VOMS proxy by ``voms-proxy-fake``) and RS256
tokens; scenarios whose tool is missing are skipped with a note. Nothing
leaves the loopback interface.

Cold costs (single-threaded, in this process): one OIDC verification
without any cache, one Python chain verification (front-proxy mode), the
VOMS AC check, a first login that registers an account, a full TLS
handshake with and without a proxy certificate, one scrypt password check,
and the warm per-request cost of ``Authenticator.authenticate`` itself.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from jwt.algorithms import RSAAlgorithm
from OpenSSL import crypto

from auth.accounts import AccountStore, IdentityKind
from auth.authenticator import Authenticator, Credentials, X509Settings
from auth.cadir import TrustStore
from auth.config import AuthConfig, CrlPolicy, OidcConfig, OidcIssuerConfig, VomsConfig
from auth.middleware import PRINCIPAL, auth_middleware, install_authenticator
from auth.oidc import MemoryIssuerSource, OidcVerifier
from auth.passwords import hash_password, verify_password
from auth.tls import PeerCertificates, server_ssl_context
from auth.voms import VomsVerifier
from auth.x509 import ChainVerifier, identity_from_chain
from core.app import SERVER_LIMITS, RouteSpec, make_app
from core.db import make_engine

VO = "benchvo"
AUDIENCE = "stratus"


# --- a throwaway PKI ------------------------------------------------------------------


def _name(cn: str, *extra: tuple[Any, str]) -> x509.Name:
    attrs = [
        x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "org"),
        x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "bench"),
    ]
    attrs += [x509.NameAttribute(oid, value) for oid, value in extra]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _cert(
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    issuer: x509.Name,
    issuer_key: rsa.RSAPrivateKey,
    *,
    ca: bool,
    serial: int,
    ip: str | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        ).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    if ip is not None:
        import ipaddress

        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: rsa.RSAPrivateKey | None = None) -> Path:
    data = cert.public_bytes(serialization.Encoding.PEM)
    path.write_bytes(data)
    if key is not None:
        key_path = path.with_suffix(".key")
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o400)
    return path


@dataclass
class World:
    root: Path
    ca_cert: Path
    ca_dir: Path
    vomsdir: Path
    server_cert: Path
    server_key: Path
    user_cert: Path
    user_key: Path
    proxy: Path | None
    voms_proxy: Path | None
    issuer_key_pem: bytes
    issuer_jwk: dict[str, Any]


def _run(args: list[str]) -> bool:
    if shutil.which(args[0]) is None:
        return False
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {result.stderr.strip()}")
    return True


def build_world(root: Path) -> World:
    ca_key, user_key, server_key, voms_key = _key(), _key(), _key(), _key()
    ca_name = _name("Bench CA")
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True, serial=1)
    user = _cert(
        _name("Bench User", (NameOID.ORGANIZATION_NAME, "People")),
        user_key,
        ca_name,
        ca_key,
        ca=False,
        serial=2,
    )
    server = _cert(
        _name("127.0.0.1"), server_key, ca_name, ca_key, ca=False, serial=3, ip="127.0.0.1"
    )
    voms = _cert(_name("voms.bench.org"), voms_key, ca_name, ca_key, ca=False, serial=4)
    ca_dir = root / "certificates"
    ca_dir.mkdir()
    digest = f"{int(crypto.X509.from_cryptography(ca).subject_name_hash()):08x}"
    _write(ca_dir / f"{digest}.0", ca)
    now = dt.datetime.now(dt.UTC)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_name)
        .last_update(now - dt.timedelta(hours=1))
        .next_update(now + dt.timedelta(days=2))
        .sign(ca_key, hashes.SHA256())
    )
    (ca_dir / f"{digest}.r0").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    ca_cert = _write(root / "ca.pem", ca)
    server_cert = _write(root / "server.pem", server, server_key)
    user_cert = _write(root / "user.pem", user, user_key)
    voms_cert = _write(root / "voms.pem", voms, voms_key)
    vomsdir = root / "vomsdir"
    (vomsdir / VO).mkdir(parents=True)
    (vomsdir / VO / "voms.bench.org.lsc").write_text(
        "/DC=org/DC=bench/CN=voms.bench.org\n/DC=org/DC=bench/CN=Bench CA\n"
    )
    proxy = root / "proxy.pem"
    made = _run(
        [
            "grid-proxy-init",
            "-q",
            "-rfc",
            "-cert",
            str(user_cert),
            "-key",
            str(user_cert.with_suffix(".key")),
            "-certdir",
            str(ca_dir),
            "-out",
            str(proxy),
        ]
    )
    voms_proxy = root / "voms-proxy.pem"
    made_voms = _run(
        [
            "voms-proxy-fake",
            "-q",
            "-rfc",
            "-cert",
            str(user_cert),
            "-key",
            str(user_cert.with_suffix(".key")),
            "-certdir",
            str(ca_dir),
            "-hostcert",
            str(voms_cert),
            "-hostkey",
            str(voms_cert.with_suffix(".key")),
            "-voms",
            VO,
            "-uri",
            "voms.bench.org:15000",
            "-fqan",
            f"/{VO}/Role=NULL/Capability=NULL",
            "-fqan",
            f"/{VO}/sub/Role=NULL/Capability=NULL",
            "-out",
            str(voms_proxy),
        ]
    )
    issuer_key = _key()
    jwk = {
        **RSAAlgorithm.to_jwk(issuer_key.public_key(), as_dict=True),
        "kid": "bench",
        "alg": "RS256",
    }
    return World(
        root=root,
        ca_cert=ca_cert,
        ca_dir=ca_dir,
        vomsdir=vomsdir,
        server_cert=server_cert,
        server_key=server_cert.with_suffix(".key"),
        user_cert=user_cert,
        user_key=user_cert.with_suffix(".key"),
        proxy=proxy if made else None,
        voms_proxy=voms_proxy if made_voms else None,
        issuer_key_pem=issuer_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        issuer_jwk=jwk,
    )


def mint(world: World, issuer: str, subject: str = "bench-user", lifetime: int = 3600) -> str:
    key = serialization.load_pem_private_key(world.issuer_key_pem, password=None)
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": subject,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + lifetime,
        "preferred_username": subject,
        "groups": ["/bench/cloud"],
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench"})  # type: ignore[arg-type]


# --- the service process ------------------------------------------------------------


async def hello(request: web.Request) -> web.Response:
    principal = request.get(PRINCIPAL)
    return web.json_response({"hello": principal.account if principal else "anonymous"})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _serve(world: World, issuer_port: int, http_port: int, https_port: int) -> None:
    issuer_url = f"http://127.0.0.1:{issuer_port}"
    issuer = web.Application()

    async def discovery(_r: web.Request) -> web.Response:
        return web.json_response({"issuer": issuer_url, "jwks_uri": issuer_url + "/jwks"})

    async def jwks(_r: web.Request) -> web.Response:
        return web.json_response({"keys": [world.issuer_jwk]})

    issuer.router.add_get("/.well-known/openid-configuration", discovery)
    issuer.router.add_get("/jwks", jwks)
    issuer_runner = web.AppRunner(issuer, access_log=None)
    await issuer_runner.setup()
    await web.TCPSite(issuer_runner, "127.0.0.1", issuer_port).start()

    config = AuthConfig.model_validate(
        {
            "x509": {
                "enabled": True,
                "ca_dir": str(world.ca_dir),
                "server_cert": str(world.server_cert),
                "server_key": str(world.server_key),
            },
            "voms": {"vomsdir": str(world.vomsdir)},
            "oidc": {"issuers": [{"issuer": issuer_url, "audience": [AUDIENCE]}]},
        }
    )
    engine = make_engine(f"sqlite:///{world.root / 'accounts.db'}")
    AccountStore(engine).create_tables()
    authenticator = Authenticator.from_config(config, engine=engine)
    routes = [
        RouteSpec("GET", "/hello", hello, "authenticated"),
        RouteSpec("GET", "/public/hello", hello, "same handler, public", public=True),
    ]
    app = make_app(routes, title="auth bench", middlewares=[auth_middleware(authenticator)])
    install_authenticator(app, authenticator)
    runner = web.AppRunner(app, access_log=None, **SERVER_LIMITS)
    await runner.setup()
    context = authenticator.server_ssl_context()  # once, at start-up
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    await web.TCPSite(runner, "127.0.0.1", https_port, ssl_context=context).start()
    await asyncio.Event().wait()


def server_process(world: World, ports: tuple[int, int, int]) -> None:
    asyncio.run(_serve(world, *ports))


# --- load ------------------------------------------------------------------------------


async def _wait_until_up(url: str, context: ssl.SSLContext | None) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url, ssl=context if context is not None else False) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"service at {url} did not come up")
            await asyncio.sleep(0.1)


@dataclass
class Side:
    """One side of an A/B comparison: its own keep-alive session."""

    url: str
    session: aiohttp.ClientSession
    elapsed: float = 0.0
    done: int = 0


def _session(
    context: ssl.SSLContext | None, headers: dict[str, str], concurrency: int
) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=concurrency, ssl=context if context is not None else False
    )
    return aiohttp.ClientSession(connector=connector, headers=headers)


async def _batch(side: Side, requests: int, concurrency: int) -> None:
    async def worker(count: int) -> None:
        for _ in range(count):
            async with side.session.get(side.url) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(
                        f"{side.url}: HTTP {response.status}: {await response.text()}"
                    )

    per_worker = max(1, requests // concurrency)
    start = time.perf_counter()
    await asyncio.gather(*(worker(per_worker) for _ in range(concurrency)))
    side.elapsed += time.perf_counter() - start
    side.done += per_worker * concurrency


async def compare(
    auth: tuple[str, ssl.SSLContext | None, dict[str, str]],
    open_: tuple[str, ssl.SSLContext | None],
    *,
    requests: int,
    concurrency: int,
    batches: int,
) -> tuple[float, float]:
    """``(authenticated, open)`` requests/s, measured in alternating batches.

    Both sides keep their connections open for the whole comparison, and
    their batches alternate (A B B A A B ...), so that any background load
    on the machine falls on both sides alike.
    """
    auth_side = Side(auth[0], _session(auth[1], auth[2], concurrency))
    open_side = Side(open_[0], _session(open_[1], {}, concurrency))
    try:
        for side in (auth_side, open_side):  # warm-up: connections, caches
            await _batch(side, concurrency * 4, concurrency)
            side.elapsed = 0.0
            side.done = 0
        per_batch = max(concurrency, requests // batches)
        for index in range(batches):
            order = (open_side, auth_side) if index % 2 == 0 else (auth_side, open_side)
            for side in order:
                await _batch(side, per_batch, concurrency)
    finally:
        await auth_side.session.close()
        await open_side.session.close()
    return auth_side.done / auth_side.elapsed, open_side.done / open_side.elapsed


def client_context(world: World, cert: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(world.ca_cert))
    if cert is not None:
        context.load_cert_chain(str(cert))
    return context


@dataclass
class Pair:
    name: str
    transport: str
    auth_rps: float
    open_rps: float

    @property
    def ratio(self) -> float:
        return self.auth_rps / self.open_rps


async def run_load(world: World, args: argparse.Namespace) -> tuple[list[Pair], list[str]]:
    issuer_port, http_port, https_port = _free_port(), _free_port(), _free_port()
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(
        target=server_process, args=(world, (issuer_port, http_port, https_port)), daemon=True
    )
    proc.start()
    notes: list[str] = []
    try:
        http = f"http://127.0.0.1:{http_port}/api/v1"
        https = f"https://127.0.0.1:{https_port}/api/v1"
        plain_tls = client_context(world, None)
        await _wait_until_up(http + "/public/hello", None)
        await _wait_until_up(https + "/public/hello", plain_tls)
        token = mint(world, f"http://127.0.0.1:{issuer_port}")
        scenarios: list[
            tuple[str, str, str, ssl.SSLContext | None, dict[str, str], ssl.SSLContext | None]
        ] = [
            ("OIDC bearer token", "HTTP", http, None, {"Authorization": f"Bearer {token}"}, None),
            (
                "OIDC bearer token",
                "HTTPS",
                https,
                plain_tls,
                {"Authorization": f"Bearer {token}"},
                plain_tls,
            ),
        ]
        if world.proxy is not None:
            scenarios.append(
                (
                    "RFC 3820 proxy",
                    "HTTPS",
                    https,
                    client_context(world, world.proxy),
                    {},
                    plain_tls,
                )
            )
        else:
            notes.append("grid-proxy-init missing: proxy scenario skipped")
        if world.voms_proxy is not None:
            scenarios.append(
                (
                    "VOMS proxy",
                    "HTTPS",
                    https,
                    client_context(world, world.voms_proxy),
                    {},
                    plain_tls,
                )
            )
        else:
            notes.append("voms-proxy-fake missing: VOMS scenario skipped")
        results: list[Pair] = []
        for name, transport, base, auth_ctx, headers, open_ctx in scenarios:
            auth_rps, open_rps = await compare(
                (base + "/hello", auth_ctx, headers),
                (base + "/public/hello", open_ctx),
                requests=args.requests,
                concurrency=args.concurrency,
                batches=args.batches,
            )
            results.append(Pair(name, transport, auth_rps, open_rps))
        return results, notes
    finally:
        proc.terminate()
        proc.join(10)


# --- cold costs --------------------------------------------------------------------------


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Mean seconds per call over ``repeat`` calls."""
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


async def atimed(fn: Callable[[], Awaitable[object]], repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        await fn()
    return (time.perf_counter() - start) / repeat


def _handshakes(port: int, context: ssl.SSLContext, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with sock, context.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
            tls.sendall(
                b"GET /api/v1/public/hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            while tls.recv(65536):
                pass
    return (time.perf_counter() - start) / count


async def cold_costs(world: World, args: argparse.Namespace) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    issuer = "https://idp.bench.example"
    source = MemoryIssuerSource()
    source.set_jwks(issuer, {"keys": [world.issuer_jwk]})
    cold = OidcVerifier(
        OidcConfig(
            issuers=[OidcIssuerConfig(issuer=issuer, audience=[AUDIENCE])], token_cache_size=0
        ),
        source,
    )
    tokens = [mint(world, issuer, subject=f"user-{n}") for n in range(args.cold)]
    await cold.verify(tokens[0])  # JWKS fetched once
    it = iter(tokens * 2)
    rows.append(
        (
            "OIDC token, first verification (RS256 signature + claims)",
            await atimed(lambda: cold.verify(next(it)), args.cold),
        )
    )
    warm = OidcVerifier(
        OidcConfig(issuers=[OidcIssuerConfig(issuer=issuer, audience=[AUDIENCE])]), source
    )
    await warm.verify(tokens[0])
    rows.append(
        (
            "OIDC token, cached (SHA-256 + lookup)",
            await atimed(lambda: warm.verify(tokens[0]), args.cold * 20),
        )
    )

    trust = TrustStore.load(world.ca_dir)
    engine = make_engine(f"sqlite:///{world.root / 'cold.db'}")
    store = AccountStore(engine)
    store.create_tables()
    voms = VomsVerifier(
        VomsConfig(vomsdir=world.vomsdir),
        ChainVerifier(trust, CrlPolicy.STRICT, accept_proxies=False),
    )
    if world.proxy is not None:
        chain = x509.load_pem_x509_certificates(world.proxy.read_bytes())
        verifier = ChainVerifier(trust, CrlPolicy.STRICT)
        rows.append(
            (
                "proxy chain verification in Python (front-proxy mode, pyOpenSSL, CRLs)",
                timed(lambda: verifier.verify(chain[0], chain[1:]), args.cold),
            )
        )
    if world.voms_proxy is not None:
        vchain = x509.load_pem_x509_certificates(world.voms_proxy.read_bytes())
        identity = identity_from_chain(vchain)
        rows.append(
            (
                "VOMS AC check (parse, signature, VOMS server chain)",
                timed(lambda: voms.attributes(identity), args.cold),
            )
        )
    names = iter(range(10**6))
    rows.append(
        (
            "first login: account registration (SQLite)",
            timed(
                lambda: store.login(
                    f"/DC=org/CN=u{next(names)}",
                    IdentityKind.X509,
                    register=True,
                    suggested_name="user",
                ),
                args.cold,
            ),
        )
    )
    rows.append(
        (
            "known identity -> account lookup (SQLite)",
            timed(
                lambda: store.login(
                    "/DC=org/CN=u0", IdentityKind.X509, register=True, suggested_name="user"
                ),
                args.cold,
            ),
        )
    )

    authenticator = Authenticator(accounts=store, oidc=warm)
    header = {"Authorization": f"Bearer {tokens[0]}"}
    await authenticator.authenticate(Credentials(headers=header))
    rows.append(
        (
            "Authenticator.authenticate, bearer token, warm caches",
            await atimed(
                lambda: authenticator.authenticate(Credentials(headers=header)), args.cold * 20
            ),
        )
    )
    if world.voms_proxy is not None:
        tls_auth = Authenticator(
            accounts=store, x509_settings=X509Settings(trust, CrlPolicy.STRICT), voms=voms
        )
        ders = tuple(
            c.public_bytes(serialization.Encoding.DER)
            for c in x509.load_pem_x509_certificates(world.voms_proxy.read_bytes())
        )
        peer = PeerCertificates(leaf=ders[0], chain=ders)
        await tls_auth.authenticate(Credentials(peer=peer))
        rows.append(
            (
                "Authenticator.authenticate, VOMS proxy over TLS, warm caches",
                await atimed(lambda: tls_auth.authenticate(Credentials(peer=peer)), args.cold * 20),
            )
        )

    stored = hash_password("a benchmark password")
    rows.append(
        (
            "local password check (scrypt n=2^14, r=8)",
            timed(lambda: verify_password("a benchmark password", stored), 5),
        )
    )
    await cold.aclose()
    await warm.aclose()
    engine.dispose()

    # Full TLS handshakes against a real server context (one connection per request).
    context = server_ssl_context(world.server_cert, world.server_key, world.ca_dir)
    app = make_app([RouteSpec("GET", "/public/hello", hello, "x", public=True)], title="hs")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        count = max(20, args.cold // 5)
        rows.append(
            (
                "TLS handshake + 1 request, no client certificate",
                await asyncio.to_thread(_handshakes, port, client_context(world, None), count),
            )
        )
        if world.proxy is not None:
            rows.append(
                (
                    "TLS handshake + 1 request, proxy certificate (chain + CRL check)",
                    await asyncio.to_thread(
                        _handshakes, port, client_context(world, world.proxy), count
                    ),
                )
            )
    finally:
        await runner.cleanup()
    return rows


# --- report ----------------------------------------------------------------------------


def render(
    pairs: list[Pair], costs: list[tuple[str, float]], notes: list[str], args: argparse.Namespace
) -> str:
    lines = [
        f"Auth benchmark: {args.requests} requests per side and scenario in {args.batches} "
        f"alternating batches, {args.concurrency} keep-alive connections, loopback.",
        "",
        "| credential | transport | authenticated req/s | same endpoint, no auth, req/s | ratio |",
        "|---|---|---:|---:|---:|",
    ]
    for p in pairs:
        lines.append(
            f"| {p.name} | {p.transport} | {p.auth_rps:,.0f} | {p.open_rps:,.0f} | {p.ratio:.2f} |"
        )
    lines += ["", "| cold cost (one call) | time |", "|---|---:|"]
    for name, seconds in costs:
        shown = f"{seconds * 1e6:,.1f} µs" if seconds < 1e-3 else f"{seconds * 1e3:,.2f} ms"
        lines.append(f"| {name} | {shown} |")
    for note in notes:
        lines.append(f"\nNote: {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests", type=int, default=10000, help="requests per scenario and side"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="keep-alive connections")
    parser.add_argument("--batches", type=int, default=20, help="alternating batches per scenario")
    parser.add_argument("--cold", type=int, default=200, help="repetitions for cold costs")
    parser.add_argument("--write-doc", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    args.requests = max(args.concurrency, min(args.requests, 200_000))
    args.batches = max(2, min(args.batches, 200))
    with tempfile.TemporaryDirectory(prefix="stratus-auth-bench-") as tmp:
        world = build_world(Path(tmp))
        pairs, notes = asyncio.run(run_load(world, args))
        costs = asyncio.run(cold_costs(world, args))
    report = render(pairs, costs, notes, args)
    print(report)
    if args.write_doc:
        from benchmarks.common import write_section

        write_section("auth", "## Authentication (`python benchmarks/auth.py`)\n\n" + report)
    return report


if __name__ == "__main__":
    main()
