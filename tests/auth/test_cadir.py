"""Loading an IGTF-style CA directory and the CRL policies applied in Python."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from auth.cadir import TrustStore
from auth.config import CrlPolicy
from auth.errors import CredentialRejected
from tests.auth.conftest import GridWorld
from tests.auth.pki import now, subject_hash


def test_loads_hashed_cas_and_crls(grid: GridWorld) -> None:
    trust = TrustStore.load(grid.ca_dir)
    assert [c.subject for c in trust.cas] == [grid.ca.cert.subject]
    assert sum(len(v) for v in trust.crls.values()) == 1


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TrustStore.load(tmp_path / "nope")


def test_bad_files_and_foreign_crls_are_skipped(grid: GridWorld, tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    directory.mkdir()
    digest = subject_hash(grid.ca.cert.subject)
    (directory / f"{digest}.0").write_bytes(grid.ca.cert.public_bytes(serialization.Encoding.PEM))
    (directory / "deadbeef.0").write_text("garbage")
    (directory / "README").write_text("not a CA")
    # A CRL that claims to be the test CA's but is signed by another key.
    forged = grid.pki.crl(grid.ca, [grid.alice.cert], signer=grid.other_ca)
    (directory / f"{digest}.r0").write_bytes(forged.public_bytes(serialization.Encoding.PEM))
    (directory / "cafebabe.r0").write_text("garbage")
    trust = TrustStore.load(directory)
    assert len(trust.cas) == 1
    assert trust.crls == {}
    # The forged CRL is ignored, so alice is not revoked; under strict the CRL is missing.
    trust.check_revocation([grid.alice.cert], CrlPolicy.IF_PRESENT)
    with pytest.raises(CredentialRejected, match="no CRL available"):
        trust.check_revocation([grid.alice.cert], CrlPolicy.STRICT)


def test_check_revocation_policies(grid: GridWorld) -> None:
    trust = TrustStore.load(grid.ca_dir)
    trust.check_revocation([grid.alice.cert, grid.ca.cert], CrlPolicy.STRICT)
    with pytest.raises(CredentialRejected, match="Carol Revoked has been revoked"):
        trust.check_revocation([grid.carol.cert], CrlPolicy.BEST_EFFORT)
    trust.check_revocation([grid.carol.cert], CrlPolicy.OFF)
    # proxies are skipped: a CRL never lists them
    trust.check_revocation([grid.carol.cert], CrlPolicy.STRICT, is_proxy=[True])
    later = now() + dt.timedelta(days=30)  # past the CRL's nextUpdate
    with pytest.raises(CredentialRejected, match="has expired"):
        trust.check_revocation([grid.alice.cert], CrlPolicy.IF_PRESENT, now=later)
    trust.check_revocation([grid.alice.cert], CrlPolicy.BEST_EFFORT, now=later)


def test_openssl_store_is_built_once_per_policy(grid: GridWorld) -> None:
    trust = TrustStore.load(grid.ca_dir)
    first = trust.openssl_store(CrlPolicy.STRICT)
    assert trust.openssl_store(CrlPolicy.STRICT) is first
    assert trust.openssl_store(CrlPolicy.OFF) is not first


def test_a_pem_bundle_with_crls(grid: GridWorld, tmp_path: Path) -> None:
    pem = serialization.Encoding.PEM
    crl = grid.pki.crl(grid.ca, [grid.carol.cert])
    foreign = grid.pki.crl(grid.other_ca)  # its CA is not in the bundle: skipped
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(
        b"comment line\n"
        + grid.ca.cert.public_bytes(pem)
        + crl.public_bytes(pem)
        + foreign.public_bytes(pem)
        + b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    )
    trust = TrustStore.load_path(bundle)
    assert [c.subject for c in trust.cas] == [grid.ca.cert.subject]
    assert list(trust.crls) == [grid.ca.cert.subject.public_bytes()]
    with pytest.raises(CredentialRejected, match="Carol Revoked has been revoked"):
        trust.check_revocation([grid.carol.cert, grid.ca.cert], CrlPolicy.IF_PRESENT)
    assert TrustStore.load_path(grid.ca_dir).cas == TrustStore.load(grid.ca_dir).cas
    empty = tmp_path / "empty.pem"
    empty.write_text("nothing here\n")
    with pytest.raises(ValueError, match="holds no PEM certificate"):
        TrustStore.load_file(empty)
