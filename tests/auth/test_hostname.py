"""Certificate-for-host matching, as a TLS client decides it."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from auth.hostname import certificate_matches_host, dns_name_matches
from tests.auth.pki import grid_name, new_key, now

_KEY = new_key()


def cert(cn: str, *names: x509.GeneralName) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(grid_name(f"/DC=org/CN={cn}"))
        .issuer_name(grid_name("/DC=org/CN=CA"))
        .public_key(_KEY.public_key())
        .serial_number(1)
        .not_valid_before(now())
        .not_valid_after(now() + dt.timedelta(days=1))
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), False)
    return builder.sign(_KEY, hashes.SHA256())


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("broker.example.org", "broker.example.org", True),
        ("Broker.Example.ORG", "broker.example.org.", True),
        ("broker.example.org", "other.example.org", False),
        ("*.example.org", "broker.example.org", True),
        ("*.example.org", "example.org", False),
        ("*.example.org", "a.b.example.org", False),
        ("*.org", "example.org", False),
        ("b*.example.org", "broker.example.org", False),
        ("a.*.example.org", "a.b.example.org", False),
        ("", "broker.example.org", False),
    ],
)
def test_dns_name_matches(pattern: str, host: str, expected: bool) -> None:
    assert dns_name_matches(pattern, host) is expected


def test_ip_hosts_match_ip_entries_only() -> None:
    both = cert("127.0.0.1", x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    assert certificate_matches_host(both, "127.0.0.1")
    assert not certificate_matches_host(both, "127.0.0.2")
    cn_only = cert("127.0.0.1")
    assert not certificate_matches_host(cn_only, "127.0.0.1")  # never the CN for an address
    v6 = cert("x", x509.IPAddress(ipaddress.ip_address("::1")))
    assert certificate_matches_host(v6, "[::1]") and certificate_matches_host(v6, "::1")


def test_dns_entries_win_over_the_cn() -> None:
    san = cert("cn.example.org", x509.DNSName("broker.example.org"))
    assert certificate_matches_host(san, "broker.example.org")
    assert not certificate_matches_host(san, "cn.example.org")
    ip_only = cert("cn.example.org", x509.IPAddress(ipaddress.ip_address("10.0.0.1")))
    assert certificate_matches_host(ip_only, "cn.example.org")  # no DNS entry: CN fallback
    assert certificate_matches_host(cert("cn.example.org"), "cn.example.org")
    assert not certificate_matches_host(cert("cn.example.org"), "other.example.org")
