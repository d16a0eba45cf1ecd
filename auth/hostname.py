"""Is a certificate valid for a host name? The check a TLS client makes, in Python.

Rules (those of OpenSSL's ``X509_check_host``/``X509_check_ip`` as Python's
``ssl`` module uses them, ``check_hostname`` with the default
``hostname_checks_common_name``):

* an IP address (``127.0.0.1``, ``::1``, ``[::1]``) matches only an
  ``IPAddress`` entry of the subjectAltName; never a DNS name or the CN;
* a DNS name matches a ``DNSName`` entry, case-insensitively, ignoring a
  trailing dot; ``*`` is accepted only as the whole leftmost label of a
  pattern with at least three labels, and matches exactly one non-empty
  label (``*.example.org`` matches ``a.example.org``, not ``example.org``
  nor ``a.b.example.org``; ``f*.example.org`` matches nothing);
* only when the certificate has no ``DNSName`` entry at all is the subject
  CN compared instead (same rules).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

from cryptography import x509
from cryptography.x509.oid import NameOID


def _normalise(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _ip(host: str) -> IPv4Address | IPv6Address | None:
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ip_address(text)
    except ValueError:
        return None


def dns_name_matches(pattern: str, host: str) -> bool:
    """True if the certificate name ``pattern`` (maybe ``*.x.y``) covers the DNS name ``host``."""
    pattern, host = _normalise(pattern), _normalise(host)
    if not pattern or not host:
        return False
    if "*" not in pattern:
        return pattern == host
    labels = pattern.split(".")
    host_labels = host.split(".")
    if labels[0] != "*" or "*" in ".".join(labels[1:]) or len(labels) < 3:
        return False
    return (
        len(host_labels) == len(labels) and bool(host_labels[0]) and host_labels[1:] == labels[1:]
    )


def certificate_matches_host(cert: x509.Certificate, host: str) -> bool:
    """True if ``cert`` is valid for ``host`` as a TLS client would decide (module docstring)."""
    try:
        san: x509.SubjectAlternativeName | None = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except x509.ExtensionNotFound:
        san = None
    address = _ip(host.strip())
    if address is not None:
        return san is not None and address in san.get_values_for_type(x509.IPAddress)
    names = san.get_values_for_type(x509.DNSName) if san is not None else []
    if names:
        return any(dns_name_matches(name, host) for name in names)
    return any(
        isinstance(attr.value, str) and dns_name_matches(attr.value, host)
        for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    )
