"""Distinguished names in the grid (OpenSSL "oneline") form: ``/DC=org/DC=example/CN=Jane Doe``.

Grid tools, VOMS ``.lsc`` files and grid-mapfiles all write DNs this way,
most significant RDN first, so identities and ``.lsc`` lines compare as plain
strings. Multi-valued RDNs are joined with ``+``.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

SHORT_NAMES: dict[str, str] = {
    "2.5.4.3": "CN",
    "2.5.4.4": "SN",
    "2.5.4.5": "serialNumber",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.9": "street",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.12": "title",
    "2.5.4.17": "postalCode",
    "2.5.4.41": "name",
    "2.5.4.42": "GN",
    "2.5.4.43": "initials",
    "2.5.4.44": "generationQualifier",
    "2.5.4.46": "dnQualifier",
    "2.5.4.65": "pseudonym",
    "0.9.2342.19200300.100.1.1": "UID",
    "0.9.2342.19200300.100.1.25": "DC",
    "1.2.840.113549.1.9.1": "emailAddress",
}


def format_rdn_value(oid: str, value: str) -> str:
    """One ``type=value`` component with OpenSSL's short name for ``oid``."""
    return f"{SHORT_NAMES.get(oid, oid)}={value}"


def grid_dn(name: x509.Name) -> str:
    """``name`` as ``/A=b/C=d`` in encoded (most significant first) order."""
    parts = []
    for rdn in name.rdns:
        values = []
        for attr in rdn:
            value = attr.value
            text = value.hex() if isinstance(value, bytes) else value
            values.append(format_rdn_value(attr.oid.dotted_string, text))
        parts.append("+".join(values))
    return "".join("/" + p for p in parts)


def common_name(name: x509.Name) -> str | None:
    """The last (most specific) CN of ``name``, or None."""
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        return None
    value = attrs[-1].value
    return value if isinstance(value, str) else value.decode(errors="replace")
