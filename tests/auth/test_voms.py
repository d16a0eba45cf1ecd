"""VOMS attribute certificates made by the real voms-proxy-fake."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from auth.cadir import TrustStore
from auth.config import CrlPolicy, VomsConfig
from auth.voms import (
    VOMS_AC_EXTENSION,
    VomsAttributes,
    VomsVerifier,
    find_voms_extension,
    parse_fqan,
    parse_voms_extension,
    voms_groups_for,
)
from auth.x509 import CertIdentity, ChainVerifier
from tests.auth.conftest import FQANS, VO, GridWorld, Proxies
from tests.auth.pki import forge_proxy, load_chain

ALICE = "/DC=org/DC=test/O=People/CN=Alice Smith"
ALL_GROUPS = {VO, f"{VO}/analysis", f"{VO}/analysis/higgs"}


def identity_of(grid: GridWorld, path: Path | list[x509.Certificate]) -> CertIdentity:
    chain = load_chain(path) if isinstance(path, Path) else path
    return ChainVerifier(TrustStore.load(grid.ca_dir), CrlPolicy.STRICT).verify(chain[0], chain[1:])


def voms_verifier(grid: GridWorld, vomsdir: Path | None = None, **config: object) -> VomsVerifier:
    trust = TrustStore.load(grid.ca_dir)
    return VomsVerifier(
        VomsConfig(vomsdir=vomsdir or grid.vomsdir, **config),  # type: ignore[arg-type]
        ChainVerifier(trust, CrlPolicy.STRICT, accept_proxies=False),
    )


def test_fqans_map_to_groups_and_admin_roles(grid: GridWorld, proxies: Proxies) -> None:
    attrs = voms_verifier(grid).attributes(identity_of(grid, proxies.alice_voms))
    assert attrs.ignored == ()
    assert attrs.fqans == tuple(FQANS)
    assert attrs.vos == (VO,)
    assert attrs.groups == ALL_GROUPS
    assert attrs.admin_groups == {f"{VO}/analysis"}  # Role=VO-Admin is an admin role by default
    assert attrs.not_after is not None


def test_new_format_ac(grid: GridWorld, proxies: Proxies) -> None:
    attrs = voms_verifier(grid).attributes(identity_of(grid, proxies.alice_voms_new))
    assert (attrs.groups, attrs.ignored) == ({VO}, ())


def test_plain_voms_server_certificate_in_vomsdir(grid: GridWorld, proxies: Proxies) -> None:
    attrs = voms_verifier(grid, grid.vomsdir_pem).attributes(identity_of(grid, proxies.alice_voms))
    assert attrs.groups == ALL_GROUPS


def test_ac_in_the_first_proxy_of_a_proxy_chain(grid: GridWorld, proxies: Proxies) -> None:
    identity = identity_of(grid, proxies.alice_voms_of_proxy)
    assert identity.proxy_depth == 2
    found = find_voms_extension(identity.chain, identity.proxy_depth)
    assert found is not None and found[0] == 1  # not in the leaf: in the proxy below it
    assert voms_verifier(grid).attributes(identity).groups == ALL_GROUPS


def test_expired_ac_is_ignored(grid: GridWorld, proxies: Proxies) -> None:
    identity = identity_of(grid, proxies.alice_voms_expired_ac)
    assert identity.dn == ALICE  # the proxy itself is fine
    attrs = voms_verifier(grid).attributes(identity)
    assert attrs.groups == frozenset()
    assert attrs.ignored == (f"VO {VO}: attribute certificate has expired",)


def test_ac_from_untrusted_voms_server_is_ignored(grid: GridWorld, proxies: Proxies) -> None:
    attrs = voms_verifier(grid).attributes(identity_of(grid, proxies.alice_voms_rogue))
    assert attrs.groups == frozenset()
    assert attrs.ignored == (f"VO {VO}: not signed by a trusted VOMS server",)


def test_vo_not_accepted_or_unknown(grid: GridWorld, proxies: Proxies, tmp_path: Path) -> None:
    identity = identity_of(grid, proxies.alice_voms)
    attrs = voms_verifier(grid, vos=["othervo"]).attributes(identity)
    assert attrs.ignored == (f"VO {VO}: VO not accepted by this service",)
    empty = tmp_path / "vomsdir"
    empty.mkdir()
    attrs = voms_verifier(grid, empty).attributes(identity)
    assert attrs.ignored == (f"VO {VO}: no trusted VOMS server for this VO in the vomsdir",)
    attrs = voms_verifier(grid, tmp_path / "missing").attributes(identity)
    assert attrs.groups == frozenset()


def test_lsc_with_wrong_issuer_is_not_trusted(
    grid: GridWorld, proxies: Proxies, tmp_path: Path
) -> None:
    vomsdir = tmp_path / "vomsdir"
    (vomsdir / VO).mkdir(parents=True)
    (vomsdir / VO / "voms.test.org.lsc").write_text(f"{grid.voms.dn}\n/DC=org/CN=Another CA\n")
    attrs = voms_verifier(grid, vomsdir).attributes(identity_of(grid, proxies.alice_voms))
    assert attrs.ignored == (f"VO {VO}: not signed by a trusted VOMS server",)


def test_voms_server_chain_must_verify(grid: GridWorld, proxies: Proxies) -> None:
    other = grid.pki.ca_dir("only-other", [grid.other_ca])
    verifier = VomsVerifier(
        VomsConfig(vomsdir=grid.vomsdir),
        ChainVerifier(TrustStore.load(other), CrlPolicy.OFF, accept_proxies=False),
    )
    attrs = verifier.attributes(identity_of(grid, proxies.alice_voms))
    assert len(attrs.ignored) == 1
    assert attrs.ignored[0].startswith(f"VO {VO}: VOMS server certificate not trusted")


def _voms_extension(path: Path) -> bytes:
    leaf = load_chain(path)[0]
    ext = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(VOMS_AC_EXTENSION))
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    return ext.value.value


def _proxy_with(grid: GridWorld, value: bytes) -> list[x509.Certificate]:
    ext = x509.UnrecognizedExtension(x509.ObjectIdentifier(VOMS_AC_EXTENSION), value)
    proxy, _key = forge_proxy(grid.alice, ALICE + "/CN=99", extensions=[(ext, False)])
    return [proxy, grid.alice.cert]


def test_ac_of_another_user_is_ignored(grid: GridWorld, proxies: Proxies) -> None:
    # Bob's (valid, signed) AC copied into a proxy of Alice's.
    identity = identity_of(grid, _proxy_with(grid, _voms_extension(proxies.bob_voms)))
    attrs = voms_verifier(grid).attributes(identity)
    assert attrs.ignored == (f"VO {VO}: attribute certificate was issued for another certificate",)


def test_tampered_ac_is_ignored(grid: GridWorld, proxies: Proxies) -> None:
    value = _voms_extension(proxies.alice_voms)
    assert b"/testvo/analysis/" in value
    tampered = value.replace(b"/testvo/analysis/Role=VO-Admin", b"/testvo/analysis/Role=VO-Admix")
    identity = identity_of(grid, _proxy_with(grid, tampered))
    attrs = voms_verifier(grid).attributes(identity)
    assert attrs.ignored == (f"VO {VO}: signature does not verify",)
    attrs = voms_verifier(grid, grid.vomsdir_pem).attributes(identity)
    assert attrs.ignored == (f"VO {VO}: not signed by a trusted VOMS server",)


def test_malformed_extension_is_ignored(grid: GridWorld) -> None:
    identity = identity_of(grid, _proxy_with(grid, b"\x30\x03\x02\x01\x01"))
    attrs = voms_verifier(grid).attributes(identity)
    assert attrs == VomsAttributes(ignored=("malformed VOMS extension in proxy certificate",))


def test_no_extension_no_attributes(grid: GridWorld, proxies: Proxies) -> None:
    assert voms_verifier(grid).attributes(identity_of(grid, proxies.alice)) == VomsAttributes()


def test_parse_extension_directly(proxies: Proxies) -> None:
    (ac,) = parse_voms_extension(_voms_extension(proxies.alice_voms))
    assert ac.vo == VO and ac.host == "voms.test.org"
    assert ac.fqans == tuple(FQANS)
    assert ac.issuer_dn == "/DC=org/DC=test/CN=voms.test.org"
    assert len(ac.certificates) >= 1


@pytest.mark.parametrize(
    ("text", "group", "role"),
    [
        ("/vo", "/vo", None),
        ("/vo/Role=NULL/Capability=NULL", "/vo", None),
        ("/vo/a/b/Role=prod/Capability=NULL", "/vo/a/b", "prod"),
        ("/vo/a/Role=admin", "/vo/a", "admin"),
    ],
)
def test_parse_fqan(text: str, group: str, role: str | None) -> None:
    fqan = parse_fqan(text)
    assert (fqan.group, fqan.role, fqan.vo) == (group, role, "vo")


@pytest.mark.parametrize("text", ["", "vo/a", "/", "//vo", "/vo/Role=x/sub", "/Role=x", "/vo/a=b"])
def test_malformed_fqans(text: str) -> None:
    with pytest.raises(ValueError, match="FQAN"):
        parse_fqan(text)


def test_groups_for_fqans() -> None:
    assert voms_groups_for(["/vo/a/b/Role=NULL", "bad"]) == {"vo", "vo/a", "vo/a/b"}


def test_targets_and_unknown_critical_extensions(grid: GridWorld, proxies: Proxies) -> None:
    """voms-proxy-fake cannot write targets, so a parsed AC is altered after parsing."""
    import dataclasses
    import datetime as dt

    identity = identity_of(grid, proxies.alice_voms)
    (ac,) = parse_voms_extension(_voms_extension(proxies.alice_voms))
    holders = identity.chain[1:2]
    now = dt.datetime.now(dt.UTC)
    targeted = dataclasses.replace(ac, targets=("svc.example.org",))
    plain = voms_verifier(grid)
    assert (
        plain._problem(targeted, holders, now)
        == "attribute certificate is targeted at other services"
    )
    ours = voms_verifier(grid, service_hostnames=["SVC.example.org"])
    assert ours._problem(targeted, holders, now) is None
    critical = dataclasses.replace(ac, unknown_critical=("1.2.3.4",))
    assert plain._problem(critical, holders, now) == "unsupported critical extension 1.2.3.4"


def test_targets_are_read_from_uri_and_dns_names() -> None:
    from auth.voms import _context_strings

    # SEQUENCE { SEQUENCE { [0] { [6] "svc.example.org" } }, [2] "host.example.org" }
    uri = b"\x86\x0fsvc.example.org"
    dns = b"\x82\x10host.example.org"
    inner = b"\xa0" + bytes([len(uri)]) + uri
    seq = b"\x30" + bytes([len(inner)]) + inner
    data = b"\x30" + bytes([len(seq) + len(dns)]) + seq + dns
    assert _context_strings(data) == ["svc.example.org", "host.example.org"]
    assert _context_strings(b"\x30\x02\x30\x00") == []
