"""VOMS attribute certificates (RFC 5755 ACs) carried by grid proxies.

``voms-proxy-init`` puts the ACs of the VOMS server into the proxy it makes,
in the extension ``1.3.6.1.4.1.8005.100.100.5`` (a SEQUENCE OF SEQUENCE OF
AttributeCertificate). Each AC holds, for one VO, the FQANs granted to the
holder (``/vo/group/Role=r/Capability=NULL``), the VOMS server's policy
authority (``vo://host:port``), a validity period, and usually the VOMS
server's certificate chain (extension ``1.3.6.1.4.1.8005.100.100.10``).

An AC is trusted when all of these hold (otherwise it is *ignored*, with the
reason kept in :attr:`VomsAttributes.ignored`; the proxy still logs in, only
without that VO's groups):

* its VO is accepted (``vos``, or any VO with an entry in the vomsdir);
* its signer is trusted, either
  - by an ``.lsc`` file ``<vomsdir>/<vo>/<host>.lsc`` (line 1 the VOMS
    server's subject DN, line 2 its issuer's DN, ...) that matches the
    chain embedded in the AC, the chain verifying against the CA directory
    (CRL policy applied); or
  - by a plain certificate of the VOMS server (``<vomsdir>/<vo>/*.pem`` for
    that VO, ``<vomsdir>/*.pem`` for any VO) whose subject is the AC issuer;
* the signature over the AC verifies with that certificate's key (RSA
  PKCS#1 v1.5 with SHA-1/224/256/384/512, or ECDSA);
* it is within its validity period (``clock_skew_seconds`` of leeway):
  an expired AC is ignored;
* its holder (issuer DN + serial) is the end-entity certificate, or a proxy
  below the one carrying the AC (the "old format" of VOMS, still produced by
  ``voms-proxy-fake`` without ``-newformat``, puts the holder's *subject* DN
  where its issuer DN belongs; both forms are accepted, the serial must match);
* it has no critical extension this module does not understand, and if it
  carries targets, one of them is in ``service_hostnames``.

FQANs map to groups: ``/vo/a/b/Role=r`` gives ``vo``, ``vo/a``, ``vo/a/b``;
an FQAN whose role is in ``admin_roles`` makes the holder an admin of its
group (``vo/a/b``). FQANs outside the AC's own VO are dropped.

Which proxy carries the ACs: the one closest to the leaf that has the
extension (``voms-proxy-init`` puts them in the first-level proxy; a proxy
of that proxy made by ``grid-proxy-init`` inherits nothing, so the chain
must be available, see :mod:`auth.tls`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pyasn1.codec.der import decoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import namedtype, univ
from pyasn1_modules import rfc5280, rfc5755

from auth.config import VomsConfig
from auth.dn import format_rdn_value, grid_dn
from auth.errors import CredentialRejected
from auth.x509 import CertIdentity, ChainVerifier

log = logging.getLogger(__name__)

VOMS_AC_EXTENSION = "1.3.6.1.4.1.8005.100.100.5"
VOMS_FQAN_ATTRIBUTE = "1.3.6.1.4.1.8005.100.100.4"
VOMS_CERTS_EXTENSION = "1.3.6.1.4.1.8005.100.100.10"
VOMS_GA_EXTENSION = "1.3.6.1.4.1.8005.100.100.11"
TARGETS_EXTENSION = "2.5.29.55"
NO_REV_AVAIL_EXTENSION = "2.5.29.56"
AUTHORITY_KEY_ID_EXTENSION = "2.5.29.35"
_KNOWN_EXTENSIONS = {
    VOMS_CERTS_EXTENSION,
    VOMS_GA_EXTENSION,
    TARGETS_EXTENSION,
    NO_REV_AVAIL_EXTENSION,
    AUTHORITY_KEY_ID_EXTENSION,
}

_RSA_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "1.2.840.113549.1.1.5": hashes.SHA1,
    "1.2.840.113549.1.1.14": hashes.SHA224,
    "1.2.840.113549.1.1.11": hashes.SHA256,
    "1.2.840.113549.1.1.12": hashes.SHA384,
    "1.2.840.113549.1.1.13": hashes.SHA512,
}
_ECDSA_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "1.2.840.10045.4.3.2": hashes.SHA256,
    "1.2.840.10045.4.3.3": hashes.SHA384,
    "1.2.840.10045.4.3.4": hashes.SHA512,
}

MAX_ACS = 16


# --- FQANs ------------------------------------------------------------------


@dataclass(frozen=True)
class Fqan:
    """A parsed FQAN: ``/vo/a/b/Role=r/Capability=NULL`` -> group ``/vo/a/b``, role ``r``."""

    group: str
    role: str | None
    capability: str | None

    @property
    def vo(self) -> str:
        return self.group.strip("/").split("/")[0]

    def group_names(self) -> list[str]:
        """``vo``, ``vo/a``, ``vo/a/b``: the group and its ancestors, without leading slash."""
        parts = self.group.strip("/").split("/")
        return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def parse_fqan(text: str) -> Fqan:
    """Parse one FQAN; ``Role=NULL``/``Capability=NULL`` mean none. ValueError if malformed."""
    if not text.startswith("/") or "//" in text:
        raise ValueError(f"malformed FQAN {text!r}")
    groups: list[str] = []
    role = capability = None
    for part in text.strip("/").split("/"):
        if part.startswith("Role="):
            role = part[5:] or None
        elif part.startswith("Capability="):
            capability = part[11:] or None
        elif "=" in part or not part:
            raise ValueError(f"malformed FQAN {text!r}")
        else:
            if role is not None or capability is not None:
                raise ValueError(f"malformed FQAN {text!r}")
            groups.append(part)
    if not groups:
        raise ValueError(f"FQAN without a group: {text!r}")
    return Fqan(
        group="/" + "/".join(groups),
        role=None if role in (None, "NULL") else role,
        capability=None if capability in (None, "NULL") else capability,
    )


# --- parsing ------------------------------------------------------------------


class _RawAC(univ.Sequence):
    """An AC with its three parts kept as raw DER (the signature is over acinfo's bytes)."""

    componentType = namedtype.NamedTypes(
        namedtype.NamedType("acinfo", univ.Any()),
        namedtype.NamedType("signatureAlgorithm", rfc5280.AlgorithmIdentifier()),
        namedtype.NamedType("signatureValue", univ.BitString()),
    )


class _ACSeq(univ.SequenceOf):
    componentType = _RawAC()


class _ACSeqs(univ.SequenceOf):
    componentType = _ACSeq()


class _CertList(univ.SequenceOf):
    componentType = univ.Any()


class _CertListWrapper(univ.SequenceOf):
    componentType = _CertList()


@dataclass(frozen=True)
class AttributeCertificate:
    """One parsed (not yet trusted) VOMS attribute certificate."""

    vo: str
    uri: str
    fqans: tuple[str, ...]
    issuer_dn: str
    holder_issuer_dn: str | None
    holder_serial: int | None
    serial: int
    not_before: datetime
    not_after: datetime
    signature_algorithm: str
    signature: bytes
    signed_bytes: bytes
    certificates: tuple[x509.Certificate, ...]
    targets: tuple[str, ...] | None
    unknown_critical: tuple[str, ...]

    @property
    def host(self) -> str:
        """The VOMS server host of the policy authority (``vo://host:port``)."""
        rest = self.uri.split("://", 1)[-1]
        return rest.rsplit(":", 1)[0] if ":" in rest else rest


def _name_to_dn(name: rfc5280.Name) -> str:
    parts = []
    for rdn in name["rdnSequence"]:
        values = []
        for atv in rdn:
            oid = str(atv["type"])
            raw = bytes(atv["value"])
            try:
                decoded, _ = decoder.decode(raw)
                text = str(decoded)
            except PyAsn1Error:
                text = raw.hex()
            values.append(format_rdn_value(oid, text))
        parts.append("+".join(values))
    return "".join("/" + p for p in parts)


def _general_names_dn(names: rfc5280.GeneralNames) -> str | None:
    for general_name in names:
        if general_name.getName() == "directoryName":
            return _name_to_dn(general_name["directoryName"])
    return None


def _time(value: univ.Any) -> datetime:
    moment: datetime = value.asDateTime
    return moment.astimezone(UTC)


def _context_strings(data: bytes) -> list[str]:
    """IA5 values of every context-specific [2] (dNSName) or [6] (URI) tag in ``data``."""
    found: list[str] = []

    def walk(buf: bytes) -> None:
        pos = 0
        while pos + 2 <= len(buf):
            tag = buf[pos]
            length = buf[pos + 1]
            pos += 2
            if length & 0x80:
                count = length & 0x7F
                if count == 0 or count > 4 or pos + count > len(buf):
                    return
                length = int.from_bytes(buf[pos : pos + count], "big")
                pos += count
            body = buf[pos : pos + length]
            pos += length
            if tag & 0x20:
                walk(body)
            elif tag in (0x82, 0x86):
                found.append(body.decode("ascii", errors="replace"))

    walk(data)
    return found


def parse_attribute_certificate(raw: _RawAC) -> AttributeCertificate:
    """Decode one AC; ``CredentialRejected`` if it is not a well-formed VOMS AC."""
    signed = bytes(raw["acinfo"])
    try:
        info, rest = decoder.decode(signed, asn1Spec=rfc5755.AttributeCertificateInfo())
    except PyAsn1Error as exc:
        raise CredentialRejected("malformed VOMS attribute certificate") from exc
    if rest:
        raise CredentialRejected("malformed VOMS attribute certificate")
    holder = info["holder"]
    holder_dn: str | None = None
    holder_serial: int | None = None
    if holder["baseCertificateID"].isValue:
        holder_dn = _general_names_dn(holder["baseCertificateID"]["issuer"])
        holder_serial = int(holder["baseCertificateID"]["serial"])
    issuer = info["issuer"]
    if issuer.getName() != "v2Form":
        raise CredentialRejected("VOMS AC without a v2Form issuer")
    issuer_dn = _general_names_dn(issuer["v2Form"]["issuerName"])
    if issuer_dn is None:
        raise CredentialRejected("VOMS AC issuer is not a directory name")

    fqans: list[str] = []
    uri = ""
    for attribute in info["attributes"]:
        if str(attribute["type"]) != VOMS_FQAN_ATTRIBUTE:
            continue
        for value in attribute["values"]:
            try:
                syntax, _ = decoder.decode(bytes(value), asn1Spec=rfc5755.IetfAttrSyntax())
            except PyAsn1Error as exc:
                raise CredentialRejected("malformed VOMS FQAN attribute") from exc
            if syntax["policyAuthority"].isValue:
                for general_name in syntax["policyAuthority"]:
                    if general_name.getName() == "uniformResourceIdentifier":
                        uri = str(general_name["uniformResourceIdentifier"])
            for item in syntax["values"]:
                kind = item.getName()
                if kind == "octets":
                    fqans.append(bytes(item["octets"]).decode("utf-8", errors="replace"))
                elif kind == "string":
                    fqans.append(str(item["string"]))
    if not uri or "://" not in uri:
        raise CredentialRejected("VOMS AC without a policy authority (vo://host:port)")
    vo = uri.split("://", 1)[0]

    certificates: list[x509.Certificate] = []
    targets: list[str] | None = None
    unknown_critical: list[str] = []
    if info["extensions"].isValue:
        for ext in info["extensions"]:
            oid = str(ext["extnID"])
            value = bytes(ext["extnValue"])
            if oid == VOMS_CERTS_EXTENSION:
                certificates = _embedded_certificates(value)
            elif oid == TARGETS_EXTENSION:
                targets = _context_strings(value)
            elif bool(ext["critical"]) and oid not in _KNOWN_EXTENSIONS:
                unknown_critical.append(oid)

    validity = info["attrCertValidityPeriod"]
    return AttributeCertificate(
        vo=vo,
        uri=uri,
        fqans=tuple(fqans),
        issuer_dn=issuer_dn,
        holder_issuer_dn=holder_dn,
        holder_serial=holder_serial,
        serial=int(info["serialNumber"]),
        not_before=_time(validity["notBeforeTime"]),
        not_after=_time(validity["notAfterTime"]),
        signature_algorithm=str(raw["signatureAlgorithm"]["algorithm"]),
        signature=raw["signatureValue"].asOctets(),
        signed_bytes=signed,
        certificates=tuple(certificates),
        targets=tuple(targets) if targets else None,
        unknown_critical=tuple(unknown_critical),
    )


def _embedded_certificates(value: bytes) -> list[x509.Certificate]:
    try:
        wrapper, _ = decoder.decode(value, asn1Spec=_CertListWrapper())
        return [x509.load_der_x509_certificate(bytes(c)) for lst in wrapper for c in lst]
    except (PyAsn1Error, ValueError) as exc:
        raise CredentialRejected("malformed certificate list in VOMS AC") from exc


def parse_voms_extension(value: bytes) -> list[AttributeCertificate]:
    """All ACs of a proxy's VOMS extension value. ``CredentialRejected`` if malformed."""
    try:
        seqs, rest = decoder.decode(value, asn1Spec=_ACSeqs())
    except PyAsn1Error as exc:
        raise CredentialRejected("malformed VOMS extension in proxy certificate") from exc
    if rest:
        raise CredentialRejected("malformed VOMS extension in proxy certificate")
    raws = [ac for seq in seqs for ac in seq]
    if len(raws) > MAX_ACS:
        raise CredentialRejected(f"more than {MAX_ACS} VOMS attribute certificates")
    return [parse_attribute_certificate(r) for r in raws]


def find_voms_extension(
    chain: Sequence[x509.Certificate], proxy_depth: int
) -> tuple[int, bytes] | None:
    """``(index, value)`` of the VOMS extension in the proxy closest to the leaf, or None."""
    for index in range(proxy_depth):
        for ext in chain[index].extensions:
            if ext.oid.dotted_string == VOMS_AC_EXTENSION and isinstance(
                ext.value, x509.UnrecognizedExtension
            ):
                return index, ext.value.value
    return None


# --- trust ------------------------------------------------------------------


@dataclass
class VomsTrust:
    """The contents of a vomsdir: per VO, ``.lsc`` DN chains and plain VOMS server certificates."""

    lsc: dict[str, list[tuple[str, ...]]] = field(default_factory=dict)
    certs: dict[str, list[x509.Certificate]] = field(default_factory=dict)  # "" = any VO

    @classmethod
    def load(cls, vomsdir: Path) -> VomsTrust:
        """Read ``vomsdir`` (missing: nothing trusted). Bad files are skipped and logged."""
        trust = cls()
        if not vomsdir.is_dir():
            log.warning("vomsdir %s does not exist: no VOMS server is trusted", vomsdir)
            return trust
        for path in sorted(vomsdir.iterdir()):
            if path.is_file():
                trust._add_cert_file("", path)
            elif path.is_dir():
                for entry in sorted(path.iterdir()):
                    if not entry.is_file():
                        continue
                    if entry.suffix == ".lsc":
                        lines = [
                            ln.strip() for ln in entry.read_text(errors="replace").splitlines()
                        ]
                        dns = tuple(ln for ln in lines if ln and not ln.startswith("#"))
                        if len(dns) >= 2:
                            trust.lsc.setdefault(path.name, []).append(dns)
                        else:
                            log.warning("skipping %s: an .lsc file needs two DNs or more", entry)
                    else:
                        trust._add_cert_file(path.name, entry)
        return trust

    def _add_cert_file(self, vo: str, path: Path) -> None:
        if path.suffix not in (".pem", ".crt", ".cert"):
            return
        try:
            certs = x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError) as exc:
            log.warning("skipping unreadable VOMS certificate %s: %s", path, exc)
            return
        self.certs.setdefault(vo, []).extend(certs[:1])

    def knows(self, vo: str) -> bool:
        """True if some entry of the vomsdir can vouch for ``vo``."""
        return vo in self.lsc or vo in self.certs or bool(self.certs.get(""))


@dataclass(frozen=True)
class VomsAttributes:
    """What the trusted ACs of a credential grant."""

    fqans: tuple[str, ...] = ()
    groups: frozenset[str] = frozenset()
    admin_groups: frozenset[str] = frozenset()
    vos: tuple[str, ...] = ()
    not_after: datetime | None = None
    ignored: tuple[str, ...] = ()


def verify_signature(ac: AttributeCertificate, signer: x509.Certificate) -> bool:
    """True if ``signer``'s key verifies ``ac``'s signature (supported algorithms only)."""
    key = signer.public_key()
    try:
        if ac.signature_algorithm in _RSA_HASHES and isinstance(key, rsa.RSAPublicKey):
            algorithm = _RSA_HASHES[ac.signature_algorithm]()
            key.verify(ac.signature, ac.signed_bytes, padding.PKCS1v15(), algorithm)
            return True
        if ac.signature_algorithm in _ECDSA_HASHES and isinstance(key, ec.EllipticCurvePublicKey):
            algorithm = _ECDSA_HASHES[ac.signature_algorithm]()
            key.verify(ac.signature, ac.signed_bytes, ec.ECDSA(algorithm))
            return True
    except (InvalidSignature, UnsupportedAlgorithm, ValueError):
        return False
    return False


class VomsVerifier:
    """Turns the ACs in a verified proxy chain into groups, per :class:`~auth.config.VomsConfig`.

    ``chains`` verifies the VOMS server chain embedded in an AC (for
    ``.lsc`` trust); it must be a :class:`ChainVerifier` that does not accept
    proxies. The vomsdir is read once, in the constructor (or pass ``trust``).
    """

    def __init__(
        self,
        config: VomsConfig,
        chains: ChainVerifier | None,
        *,
        trust: VomsTrust | None = None,
    ) -> None:
        self._config = config
        self._chains = chains
        self._trust = trust if trust is not None else VomsTrust.load(config.vomsdir)
        self._vos = set(config.vos)
        self._admin_roles = set(config.admin_roles)
        self._hostnames = {h.lower() for h in config.service_hostnames}
        self._skew = timedelta(seconds=config.clock_skew_seconds)

    def attributes(self, identity: CertIdentity, *, now: datetime | None = None) -> VomsAttributes:
        """The VOMS attributes of ``identity`` (a verified chain); empty if it carries none.

        Never raises for a bad or untrusted AC: such ACs are listed in
        ``ignored`` and contribute nothing.
        """
        found = find_voms_extension(identity.chain, identity.proxy_depth)
        if found is None:
            return VomsAttributes()
        index, value = found
        try:
            acs = parse_voms_extension(value)
        except CredentialRejected as exc:
            return VomsAttributes(ignored=(str(exc),))
        moment = now or datetime.now(UTC)
        holders = identity.chain[index + 1 : identity.proxy_depth + 1]
        fqans: list[str] = []
        groups: set[str] = set()
        admin_groups: set[str] = set()
        vos: list[str] = []
        ignored: list[str] = []
        not_after: datetime | None = None
        for ac in acs:
            problem = self._problem(ac, holders, moment)
            if problem is not None:
                ignored.append(f"VO {ac.vo}: {problem}")
                log.info("ignoring VOMS AC of VO %s for %s: %s", ac.vo, identity.dn, problem)
                continue
            vos.append(ac.vo)
            not_after = ac.not_after if not_after is None else min(not_after, ac.not_after)
            for text in ac.fqans:
                try:
                    fqan = parse_fqan(text)
                except ValueError:
                    ignored.append(f"VO {ac.vo}: malformed FQAN dropped")
                    continue
                if fqan.vo != ac.vo:
                    ignored.append(f"VO {ac.vo}: FQAN {text} of another VO dropped")
                    continue
                fqans.append(text)
                groups.update(fqan.group_names())
                if fqan.role is not None and fqan.role in self._admin_roles:
                    admin_groups.add(fqan.group_names()[-1])
        return VomsAttributes(
            fqans=tuple(fqans),
            groups=frozenset(groups),
            admin_groups=frozenset(admin_groups),
            vos=tuple(vos),
            not_after=not_after,
            ignored=tuple(ignored),
        )

    def _problem(
        self, ac: AttributeCertificate, holders: Sequence[x509.Certificate], now: datetime
    ) -> str | None:
        if self._vos and ac.vo not in self._vos:
            return "VO not accepted by this service"
        if not self._trust.knows(ac.vo):
            return "no trusted VOMS server for this VO in the vomsdir"
        if ac.not_after + self._skew < now:
            return "attribute certificate has expired"
        if ac.not_before - self._skew > now:
            return "attribute certificate is not yet valid"
        if ac.unknown_critical:
            return f"unsupported critical extension {ac.unknown_critical[0]}"
        if ac.targets is not None and not self._hostnames.intersection(
            t.lower() for t in ac.targets
        ):
            return "attribute certificate is targeted at other services"
        if not any(
            ac.holder_serial == h.serial_number
            and ac.holder_issuer_dn in (grid_dn(h.issuer), grid_dn(h.subject))
            for h in holders
        ):
            return "attribute certificate was issued for another certificate"
        return self._signer_problem(ac, now)

    def _signer_problem(self, ac: AttributeCertificate, now: datetime) -> str | None:
        for cert in (*self._trust.certs.get(ac.vo, []), *self._trust.certs.get("", [])):
            if grid_dn(cert.subject) != ac.issuer_dn:
                continue
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                continue
            if verify_signature(ac, cert):
                return None
        lsc_entries = self._trust.lsc.get(ac.vo, [])
        if lsc_entries and ac.certificates:
            embedded = ac.certificates
            signer = embedded[0]
            if grid_dn(signer.subject) == ac.issuer_dn and any(
                _lsc_matches(dns, embedded) for dns in lsc_entries
            ):
                if not verify_signature(ac, signer):
                    return "signature does not verify"
                if self._chains is None:
                    return "no CA directory to validate the VOMS server certificate"
                try:
                    self._chains.verify_chain(signer, embedded[1:])
                except CredentialRejected as exc:
                    return f"VOMS server certificate not trusted: {exc}"
                return None
        return "not signed by a trusted VOMS server"


def _lsc_matches(dns: Sequence[str], embedded: Sequence[x509.Certificate]) -> bool:
    """``.lsc`` lines: the VOMS cert's subject, then its issuer, then that one's issuer..."""
    expected = [grid_dn(embedded[0].subject), *(grid_dn(c.issuer) for c in embedded)]
    return list(dns) == expected[: len(dns)]


def voms_groups_for(fqans: Iterable[str]) -> frozenset[str]:
    """The groups implied by ``fqans`` (malformed ones skipped)."""
    groups: set[str] = set()
    for text in fqans:
        try:
            groups.update(parse_fqan(text).group_names())
        except ValueError:
            continue
    return frozenset(groups)
