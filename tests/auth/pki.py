"""A throwaway grid PKI for the auth tests, and the real proxy tools that use it.

Certificates are made with ``cryptography``; proxies with the real
``grid-proxy-init`` (Debian ``globus-proxy-utils``) and ``voms-proxy-fake``
(Debian ``voms-clients``). A missing tool fails the test under CI=true and
skips it elsewhere.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import crypto

from tests.helpers import missing

UTC = dt.UTC


def now() -> dt.datetime:
    return dt.datetime.now(UTC)


def grid_name(dn: str) -> x509.Name:
    """``/DC=org/DC=test/CN=x`` as an x509.Name (DC, O, OU, CN, C only)."""
    oids = {
        "DC": NameOID.DOMAIN_COMPONENT,
        "O": NameOID.ORGANIZATION_NAME,
        "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
        "CN": NameOID.COMMON_NAME,
        "C": NameOID.COUNTRY_NAME,
    }
    attrs = []
    for part in dn.strip("/").split("/"):
        key, value = part.split("=", 1)
        attrs.append(x509.NameAttribute(oids[key], value))
    return x509.Name(attrs)


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Cred:
    """A certificate with its key, and the files they were written to."""

    cert: x509.Certificate
    key: rsa.RSAPrivateKey
    cert_path: Path
    key_path: Path

    @property
    def dn(self) -> str:
        from auth.dn import grid_dn

        return grid_dn(self.cert.subject)

    def pem_with_key(self, path: Path) -> Path:
        """Certificate and key in one file (what a client loads with load_cert_chain)."""
        path.write_bytes(self.cert_path.read_bytes() + self.key_path.read_bytes())
        path.chmod(0o600)
        return path


def write_cred(directory: Path, name: str, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> Cred:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / f"{name}.pem"
    key_path = directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o400)
    return Cred(cert=cert, key=key, cert_path=cert_path, key_path=key_path)


def subject_hash(name: x509.Name) -> str:
    """OpenSSL's subject hash (``openssl x509 -hash``) as 8 hex digits."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(_HASH_KEY.public_key())
        .serial_number(1)
        .not_valid_before(now())
        .not_valid_after(now() + dt.timedelta(days=1))
    )
    cert = builder.sign(_HASH_KEY, hashes.SHA256())
    return f"{crypto.X509.from_cryptography(cert).subject_name_hash():08x}"


_HASH_KEY = new_key()


@dataclass
class Pki:
    """Makes CAs, user/host certificates, CRLs and CA directories under ``root``."""

    root: Path
    serial: int = 1000
    crls: dict[str, list[int]] = field(default_factory=dict)

    def _serial(self) -> int:
        self.serial += 1
        return self.serial

    def ca(
        self,
        name: str,
        dn: str,
        *,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> Cred:
        key = new_key()
        subject = grid_name(dn)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(self._serial())
            .not_valid_before(not_before or now() - dt.timedelta(days=1))
            .not_valid_after(not_after or now() + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return write_cred(self.root / "cas", name, cert, key)

    def issue(
        self,
        ca: Cred,
        name: str,
        dn: str,
        *,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        server_ip: str | None = None,
    ) -> Cred:
        """An end-entity certificate (client, or server for ``server_ip``)."""
        key = new_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(grid_name(dn))
            .issuer_name(ca.cert.subject)
            .public_key(key.public_key())
            .serial_number(self._serial())
            .not_valid_before(not_before or now() - dt.timedelta(hours=1))
            .not_valid_after(not_after or now() + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), False
            )
        )
        if server_ip is not None:
            import ipaddress

            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address(server_ip)), x509.DNSName("localhost")]
                ),
                critical=False,
            )
        cert = builder.sign(ca.key, hashes.SHA256())
        return write_cred(self.root / "users", name, cert, key)

    def crl(
        self,
        ca: Cred,
        revoked: list[x509.Certificate] = (),  # type: ignore[assignment]
        *,
        next_update: dt.datetime | None = None,
        signer: Cred | None = None,
    ) -> x509.CertificateRevocationList:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca.cert.subject)
            .last_update(now() - dt.timedelta(hours=2))
            .next_update(next_update or now() + dt.timedelta(days=7))
        )
        for cert in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(cert.serial_number)
                .revocation_date(now() - dt.timedelta(hours=1))
                .build()
            )
        return builder.sign((signer or ca).key, hashes.SHA256())

    def ca_dir(
        self,
        name: str,
        cas: list[Cred],
        crls: dict[str, x509.CertificateRevocationList] | None = None,
    ) -> Path:
        """An IGTF-style directory: ``<hash>.0`` per CA, ``<hash>.r0`` per CRL (by CA name)."""
        directory = self.root / "cadirs" / name
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        for ca in cas:
            digest = subject_hash(ca.cert.subject)
            (directory / f"{digest}.0").write_bytes(
                ca.cert.public_bytes(serialization.Encoding.PEM)
            )
        for ca_name, crl in (crls or {}).items():
            ca = next(c for c in cas if c.cert_path.stem == ca_name)
            digest = subject_hash(ca.cert.subject)
            (directory / f"{digest}.r0").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        return directory


def require_grid_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"the {name!r} command (apt-get install globus-proxy-utils voms-clients)")
    assert path is not None
    return path


def _run(args: list[str]) -> None:
    env = {**os.environ, "RANDFILE": "/dev/null"}
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr.strip()}")


def grid_proxy_init(
    cred_cert: Path,
    cred_key: Path,
    out: Path,
    *,
    cert_dir: Path,
    limited: bool = False,
    valid: str | None = None,
) -> Path:
    """A real RFC 3820 proxy made by ``grid-proxy-init`` (file: proxy, key, chain)."""
    tool = require_grid_tool("grid-proxy-init")
    args = [tool, "-q", "-rfc", "-cert", str(cred_cert), "-key", str(cred_key)]
    args += ["-certdir", str(cert_dir), "-out", str(out)]
    if limited:
        args.append("-limited")
    if valid is not None:
        args += ["-valid", valid]
    _run(args)
    return out


def voms_proxy_fake(
    user: Cred,
    voms_server: Cred,
    out: Path,
    *,
    cert_dir: Path,
    vo: str,
    fqans: list[str],
    uri: str = "voms.test.org:15000",
    extra: list[str] = (),  # type: ignore[assignment]
) -> Path:
    """A real VOMS proxy made by ``voms-proxy-fake`` with an AC signed by ``voms_server``."""
    tool = require_grid_tool("voms-proxy-fake")
    args = [tool, "-q", "-rfc", "-cert", str(user.cert_path), "-key", str(user.key_path)]
    args += ["-certdir", str(cert_dir), "-hostcert", str(voms_server.cert_path)]
    args += ["-hostkey", str(voms_server.key_path), "-voms", vo, "-uri", uri, "-out", str(out)]
    for fqan in fqans:
        args += ["-fqan", fqan]
    args += list(extra)
    _run(args)
    return out


def load_chain(path: Path) -> list[x509.Certificate]:
    """The certificates of a proxy or PEM file, in file order (leaf first)."""
    return x509.load_pem_x509_certificates(path.read_bytes())


def pem(certs: list[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def forge_proxy(
    issuer: Cred,
    subject_dn: str,
    *,
    issuer_name: x509.Name | None = None,
    extensions: list[tuple[x509.ExtensionType, bool]] = (),  # type: ignore[assignment]
    policy_oid: str = "1.3.6.1.5.5.7.21.1",
    not_after: dt.datetime | None = None,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A hand-made RFC 3820 proxy signed by ``issuer``'s key (possibly claiming another issuer)."""
    from pyasn1.codec.der import encoder
    from pyasn1.type import univ

    from auth.x509 import _ProxyCertInfo, _ProxyPolicy

    info = _ProxyCertInfo()
    policy = _ProxyPolicy()
    policy["policyLanguage"] = univ.ObjectIdentifier(policy_oid)
    info["proxyPolicy"] = policy
    pci = encoder.encode(info)
    key = new_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(grid_name(subject_dn))
        .issuer_name(issuer_name or issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(os.urandom(4), "big"))
        .not_valid_before(now() - dt.timedelta(minutes=5))
        .not_valid_after(not_after or now() + dt.timedelta(hours=12))
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.5.5.7.1.14"), pci),
            critical=True,
        )
    )
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(issuer.key, hashes.SHA256()), key


def write_proxy_file(
    path: Path, proxy: x509.Certificate, key: rsa.RSAPrivateKey, chain: list[x509.Certificate]
) -> Path:
    """A proxy file in the grid layout: proxy certificate, its key, then the chain."""
    path.write_bytes(
        proxy.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        + pem(chain).encode()
    )
    path.chmod(0o600)
    return path
