"""An IGTF-style trusted CA directory: ``<hash>.<n>`` CA certificates and ``<hash>.r<n>`` CRLs.

The directory is read once (:meth:`TrustStore.load`), at service start-up;
after ``fetch-crl`` or a CA update the service reloads it (or restarts).
The OpenSSL store for Python-side verification is built once per
:class:`TrustStore` and shared by every verification; nothing here is built
per request.

Revocation rules (:class:`~auth.config.CrlPolicy`), applied to every
non-proxy certificate of a chain below the trust anchor (RFC 3820 proxies
are never on a CRL; OpenSSL does not check them either):

* a certificate listed on a present CRL is refused (all policies but ``off``);
* no CRL for its issuer: refused under ``strict``, accepted otherwise;
* only an expired CRL: refused under ``strict`` and ``if-present``,
  accepted (revocations in it still honoured) under ``best-effort``.

A CRL whose signature does not verify with its CA's key is discarded at
load time (and logged), so it counts as missing.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning
from OpenSSL import crypto

from auth.config import CrlPolicy
from auth.dn import grid_dn
from auth.errors import CredentialRejected

log = logging.getLogger(__name__)

_CA_FILE = re.compile(r"^[0-9a-f]{8}\.\d+$")
_CRL_FILE = re.compile(r"^[0-9a-f]{8}\.r\d+$")


def _load_pem_or_der_certs(data: bytes) -> list[x509.Certificate]:
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificates(data)
    return [x509.load_der_x509_certificate(data)]


def _load_crl(data: bytes) -> x509.CertificateRevocationList:
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


def signed_by(
    cert_or_crl: x509.Certificate | x509.CertificateRevocationList, issuer: x509.Certificate
) -> bool:
    """True if ``issuer``'s public key verifies the signature of ``cert_or_crl``."""
    key = issuer.public_key()
    if isinstance(cert_or_crl, x509.CertificateRevocationList):
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            return False
        return cert_or_crl.is_signature_valid(key)
    try:
        cert_or_crl.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


@dataclass
class TrustStore:
    """The trusted CAs and their CRLs, indexed by subject DER."""

    ca_dir: Path
    cas: list[x509.Certificate] = field(default_factory=list)
    crls: dict[bytes, list[x509.CertificateRevocationList]] = field(default_factory=dict)
    _openssl: dict[tuple[CrlPolicy, bool], crypto.X509Store] = field(
        default_factory=dict, repr=False
    )

    @classmethod
    def load(cls, ca_dir: Path) -> TrustStore:
        """Read every ``<hash>.<n>`` CA file and ``<hash>.r<n>`` CRL of ``ca_dir``.

        Unreadable files are skipped with a warning (one bad file must not
        take the whole service down); a CRL not signed by a CA of the
        directory is skipped too. Raises ``FileNotFoundError`` if the
        directory does not exist.
        """
        if not ca_dir.is_dir():
            raise FileNotFoundError(f"CA directory {ca_dir} does not exist")
        store = cls(ca_dir=ca_dir)
        seen: set[bytes] = set()
        crl_files: list[Path] = []
        for path in sorted(ca_dir.iterdir()):
            if _CRL_FILE.match(path.name):
                crl_files.append(path)
                continue
            if not _CA_FILE.match(path.name):
                continue
            try:
                certs = _load_pem_or_der_certs(path.read_bytes())
            except (OSError, ValueError) as exc:
                log.warning("skipping unreadable CA file %s: %s", path, exc)
                continue
            for cert in certs:
                der = cert.public_bytes(Encoding.DER)
                if der not in seen:
                    seen.add(der)
                    store.cas.append(cert)
        by_subject: dict[bytes, list[x509.Certificate]] = {}
        for ca in store.cas:
            by_subject.setdefault(ca.subject.public_bytes(), []).append(ca)
        for path in crl_files:
            try:
                crl = _load_crl(path.read_bytes())
            except (OSError, ValueError) as exc:
                log.warning("skipping unreadable CRL %s: %s", path, exc)
                continue
            issuer_key = crl.issuer.public_bytes()
            if not any(signed_by(crl, ca) for ca in by_subject.get(issuer_key, [])):
                log.warning("skipping CRL %s: not signed by a CA of %s", path, ca_dir)
                continue
            store.crls.setdefault(issuer_key, []).append(crl)
        log.info(
            "loaded %d CA certificate(s) and %d CRL(s) from %s",
            len(store.cas),
            sum(len(v) for v in store.crls.values()),
            ca_dir,
        )
        return store

    @classmethod
    def load_file(cls, path: Path) -> TrustStore:
        """Trust the CA certificates of one PEM bundle (plus any ``X509 CRL`` blocks in it).

        What ``ssl.create_default_context(cafile=...)`` trusts, for
        verification in Python. A CRL is kept only when a CA of the bundle
        signed it. Raises ``FileNotFoundError`` if the file does not exist
        and ``ValueError`` if it holds no certificate.
        """
        data = path.read_bytes()
        certs = []
        # One block at a time: an odd certificate of a system bundle (e.g. a negative
        # serial number, which cryptography warns about) must not make the others unusable.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            for block in _pem_blocks(data, b"CERTIFICATE"):
                try:
                    certs.append(x509.load_pem_x509_certificate(block))
                except ValueError as exc:
                    log.warning("skipping unreadable certificate in %s: %s", path, exc)
        if not certs:
            raise ValueError(f"{path} holds no PEM certificate")
        store = cls(ca_dir=path, cas=certs)
        for block in _pem_blocks(data, b"X509 CRL"):
            try:
                crl = x509.load_pem_x509_crl(block)
            except ValueError as exc:
                log.warning("skipping unreadable CRL in %s: %s", path, exc)
                continue
            if not any(signed_by(crl, ca) for ca in certs if ca.subject == crl.issuer):
                log.warning("skipping CRL in %s: not signed by a CA of the file", path)
                continue
            store.crls.setdefault(crl.issuer.public_bytes(), []).append(crl)
        return store

    @classmethod
    def load_path(cls, path: Path) -> TrustStore:
        """A hashed CA directory (:meth:`load`) or a PEM bundle file (:meth:`load_file`)."""
        return cls.load(path) if path.is_dir() else cls.load_file(path)

    def openssl_store(self, policy: CrlPolicy, *, allow_proxies: bool = True) -> crypto.X509Store:
        """The pyOpenSSL store for ``policy`` (built on first use, then shared).

        Under ``strict`` it holds every CRL and checks the whole chain
        (CRL_CHECK | CRL_CHECK_ALL); under the other policies CRLs are
        checked afterwards by :meth:`check_revocation`.
        """
        cached = self._openssl.get((policy, allow_proxies))
        if cached is not None:
            return cached
        store = crypto.X509Store()
        for ca in self.cas:
            store.add_cert(crypto.X509.from_cryptography(ca))
        flags = 0
        if allow_proxies:
            flags |= crypto.X509StoreFlags.ALLOW_PROXY_CERTS
        if policy is CrlPolicy.STRICT:
            for crls in self.crls.values():
                for crl in crls:
                    store.add_crl(crl)
            flags |= crypto.X509StoreFlags.CRL_CHECK | crypto.X509StoreFlags.CRL_CHECK_ALL
        if flags:
            store.set_flags(flags)
        self._openssl[(policy, allow_proxies)] = store
        return store

    def check_revocation(
        self,
        chain: Sequence[x509.Certificate],
        policy: CrlPolicy,
        *,
        now: datetime | None = None,
        is_proxy: Sequence[bool] | None = None,
    ) -> None:
        """Apply ``policy`` to ``chain`` (leaf first, ending at or below the trust anchor).

        ``is_proxy[i]`` marks RFC 3820 proxies, which are skipped. Raises
        ``CredentialRejected`` naming the certificate and the reason.
        """
        if policy is CrlPolicy.OFF:
            return
        moment = now or datetime.now(UTC)
        for index, cert in enumerate(chain):
            if is_proxy is not None and is_proxy[index]:
                continue
            if cert.issuer == cert.subject:
                continue  # self-signed trust anchor: nothing revokes it
            crls = self.crls.get(cert.issuer.public_bytes(), [])
            current = [c for c in crls if _crl_current(c, moment)]
            if not crls:
                if policy is CrlPolicy.STRICT:
                    raise CredentialRejected(
                        f"no CRL available for the issuer of {grid_dn(cert.subject)} "
                        f"({grid_dn(cert.issuer)})"
                    )
                continue
            if not current and policy in (CrlPolicy.STRICT, CrlPolicy.IF_PRESENT):
                raise CredentialRejected(
                    f"the CRL of {grid_dn(cert.issuer)} has expired; cannot check "
                    f"{grid_dn(cert.subject)}"
                )
            for crl in crls:
                if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                    raise CredentialRejected(
                        f"certificate {grid_dn(cert.subject)} has been revoked"
                    )


def _pem_blocks(data: bytes, label: bytes) -> list[bytes]:
    """The ``-----BEGIN <label>-----`` ... ``-----END <label>-----`` blocks of ``data``."""
    begin, end = b"-----BEGIN " + label + b"-----", b"-----END " + label + b"-----"
    blocks = []
    for chunk in data.split(begin)[1:]:
        stop = chunk.find(end)
        if stop >= 0:
            blocks.append(begin + chunk[: stop + len(end)] + b"\n")
    return blocks


def _crl_current(crl: x509.CertificateRevocationList, now: datetime) -> bool:
    next_update = crl.next_update_utc
    return next_update is None or next_update >= now
