"""Real grid credentials for tests: a throwaway CA, users, VOMS servers, and proxies
made with the real ``grid-proxy-init`` and ``voms-proxy-fake``.

Registered for the whole suite by ``tests/conftest.py`` (``pytest_plugins``), so
the auth, site agent and broker tests share one session-wide set.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.auth.pki import Cred, Pki, grid_proxy_init, now, voms_proxy_fake

VO = "testvo"


@dataclass
class GridWorld:
    """Everything certificate-related the tests use (built once per session)."""

    pki: Pki
    ca: Cred
    other_ca: Cred
    alice: Cred
    bob: Cred
    carol: Cred  # revoked on the CA's CRL
    expired: Cred
    wrong_ca_user: Cred
    server: Cred
    voms: Cred
    rogue_voms: Cred  # signed by the trusted CA, but not in any vomsdir
    ca_dir: Path  # CA + current CRL revoking carol
    ca_dir_no_crl: Path
    ca_dir_expired_crl: Path
    vomsdir: Path  # testvo/voms.test.org.lsc
    vomsdir_pem: Path  # the VOMS server certificate itself


@pytest.fixture(scope="session")
def grid(tmp_path_factory: pytest.TempPathFactory) -> GridWorld:
    root = tmp_path_factory.mktemp("pki")
    pki = Pki(root)
    ca = pki.ca("testca", "/DC=org/DC=test/CN=Test CA")
    other_ca = pki.ca("otherca", "/DC=org/DC=evil/CN=Other CA")
    alice = pki.issue(ca, "alice", "/DC=org/DC=test/O=People/CN=Alice Smith")
    bob = pki.issue(ca, "bob", "/DC=org/DC=test/O=People/CN=Bob Jones")
    carol = pki.issue(ca, "carol", "/DC=org/DC=test/O=People/CN=Carol Revoked")
    expired = pki.issue(
        ca,
        "expired",
        "/DC=org/DC=test/O=People/CN=Old Timer",
        not_before=now() - dt.timedelta(days=60),
        not_after=now() - dt.timedelta(days=1),
    )
    wrong = pki.issue(other_ca, "mallory", "/DC=org/DC=test/O=People/CN=Alice Smith")
    server = pki.issue(ca, "server", "/DC=org/DC=test/CN=127.0.0.1", server_ip="127.0.0.1")
    voms = pki.issue(ca, "voms", "/DC=org/DC=test/CN=voms.test.org")
    rogue = pki.issue(ca, "roguevoms", "/DC=org/DC=test/CN=rogue.test.org")
    crl = pki.crl(ca, [carol.cert])
    stale = pki.crl(ca, [carol.cert], next_update=now() - dt.timedelta(hours=1))
    ca_dir = pki.ca_dir("main", [ca], {"testca": crl})
    ca_dir_no_crl = pki.ca_dir("nocrl", [ca])
    ca_dir_expired_crl = pki.ca_dir("stalecrl", [ca], {"testca": stale})
    vomsdir = root / "vomsdir"
    (vomsdir / VO).mkdir(parents=True)
    (vomsdir / VO / "voms.test.org.lsc").write_text(f"{voms.dn}\n{ca.dn}\n")
    vomsdir_pem = root / "vomsdir-pem"
    (vomsdir_pem / VO).mkdir(parents=True)
    (vomsdir_pem / VO / "voms.test.org.pem").write_bytes(voms.cert_path.read_bytes())
    return GridWorld(
        pki=pki,
        ca=ca,
        other_ca=other_ca,
        alice=alice,
        bob=bob,
        carol=carol,
        expired=expired,
        wrong_ca_user=wrong,
        server=server,
        voms=voms,
        rogue_voms=rogue,
        ca_dir=ca_dir,
        ca_dir_no_crl=ca_dir_no_crl,
        ca_dir_expired_crl=ca_dir_expired_crl,
        vomsdir=vomsdir,
        vomsdir_pem=vomsdir_pem,
    )


@dataclass
class Proxies:
    """Proxy files made by the real tools."""

    alice: Path
    alice_of_proxy: Path  # a proxy of alice's proxy
    alice_limited: Path
    bob: Path
    carol: Path
    alice_voms: Path  # AC for testvo, old (default) format
    alice_voms_new: Path  # -newformat
    alice_voms_of_proxy: Path  # grid-proxy-init on top of the VOMS proxy
    alice_voms_expired_ac: Path
    alice_voms_rogue: Path  # AC signed by a VOMS server nobody trusts
    bob_voms: Path


FQANS = [
    f"/{VO}/Role=NULL/Capability=NULL",
    f"/{VO}/analysis/Role=VO-Admin/Capability=NULL",
    f"/{VO}/analysis/higgs/Role=NULL/Capability=NULL",
]


@pytest.fixture(scope="session")
def proxies(grid: GridWorld, tmp_path_factory: pytest.TempPathFactory) -> Proxies:
    out = tmp_path_factory.mktemp("proxies")
    cd = grid.ca_dir_no_crl
    alice = grid_proxy_init(grid.alice.cert_path, grid.alice.key_path, out / "alice", cert_dir=cd)
    alice2 = grid_proxy_init(alice, alice, out / "alice2", cert_dir=cd)
    limited = grid_proxy_init(
        grid.alice.cert_path, grid.alice.key_path, out / "alice-limited", cert_dir=cd, limited=True
    )
    bob = grid_proxy_init(grid.bob.cert_path, grid.bob.key_path, out / "bob", cert_dir=cd)
    carol = grid_proxy_init(grid.carol.cert_path, grid.carol.key_path, out / "carol", cert_dir=cd)
    voms = voms_proxy_fake(
        grid.alice, grid.voms, out / "alice-voms", cert_dir=cd, vo=VO, fqans=FQANS
    )
    voms_new = voms_proxy_fake(
        grid.alice,
        grid.voms,
        out / "alice-voms-new",
        cert_dir=cd,
        vo=VO,
        fqans=FQANS[:1],
        extra=["-newformat"],
    )
    voms2 = grid_proxy_init(voms, voms, out / "alice-voms2", cert_dir=cd)
    expired_ac = voms_proxy_fake(
        grid.alice,
        grid.voms,
        out / "alice-voms-old-ac",
        cert_dir=cd,
        vo=VO,
        fqans=FQANS[:1],
        extra=["-vomslife", "1", "-pastac", "3:00"],
    )
    rogue = voms_proxy_fake(
        grid.alice, grid.rogue_voms, out / "alice-voms-rogue", cert_dir=cd, vo=VO, fqans=FQANS[:1]
    )
    bob_voms = voms_proxy_fake(
        grid.bob, grid.voms, out / "bob-voms", cert_dir=cd, vo=VO, fqans=FQANS
    )
    return Proxies(
        alice=alice,
        alice_of_proxy=alice2,
        alice_limited=limited,
        bob=bob,
        carol=carol,
        alice_voms=voms,
        alice_voms_new=voms_new,
        alice_voms_of_proxy=voms2,
        alice_voms_expired_ac=expired_ac,
        alice_voms_rogue=rogue,
        bob_voms=bob_voms,
    )
