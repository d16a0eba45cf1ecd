"""The [auth] configuration model."""

from __future__ import annotations

import tomllib
from ipaddress import ip_network

import pytest
from pydantic import ValidationError

from auth.config import AuthConfig, CrlPolicy

EXAMPLE = """
[x509]
enabled = true
ca_dir = "/etc/grid-security/certificates"
crl_policy = "if-present"
server_cert = "/etc/grid-security/hostcert.pem"
server_key = "/etc/grid-security/hostkey.pem"

[x509.trusted_proxy]
addresses = ["127.0.0.1/32", "::1/128"]

[voms]
vomsdir = "/etc/grid-security/vomsdir"
vos = ["testvo"]

[[oidc.issuers]]
issuer = "https://aai.example.org/oidc/"
audience = ["stratus"]
entitlement_namespace = "urn:geant:example.org"

[[tokens]]
token_hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
account = "ops"
admin = true

[passwords]
enabled = true

[registration]
auto = true
require_groups = ["testvo"]
"""


def test_example_parses() -> None:
    config = AuthConfig.model_validate(tomllib.loads(EXAMPLE))
    assert config.x509.crl_policy is CrlPolicy.IF_PRESENT
    assert config.x509.trusted_proxy is not None
    assert config.x509.trusted_proxy.addresses[1] == ip_network("::1/128")
    assert config.x509.trusted_proxy.cert_header == "X-SSL-Client-Cert"
    assert config.oidc.issuers[0].algorithms == [
        "RS256",
        "RS384",
        "RS512",
        "ES256",
        "ES384",
        "PS256",
    ]
    assert config.tokens[0].account == "ops"
    assert config.registration.methods == ["x509", "oidc", "federated"]


def test_defaults_are_safe() -> None:
    config = AuthConfig()
    assert config.x509.enabled is False
    assert config.x509.crl_policy is CrlPolicy.STRICT
    assert config.x509.accept_limited_proxies is False
    assert config.passwords.enabled is False
    assert config.max_authorization_header == 16 * 1024


@pytest.mark.parametrize(
    "bad",
    [
        {"x509": {"crl_policy": "lenient"}},
        {"x509": {"unknown_key": 1}},
        {
            "oidc": {
                "issuers": [{"issuer": "https://a", "audience": ["x"], "algorithms": ["HS256"]}]
            }
        },
        {"oidc": {"issuers": [{"issuer": "https://a", "audience": ["x"], "algorithms": ["none"]}]}},
        {"oidc": {"issuers": [{"issuer": "https://a", "audience": ["x"]}] * 2}},
        {"tokens": [{"token_hash": "plaintext", "account": "x"}]},
        {"x509": {"trusted_proxy": {"addresses": []}}},
        {"x509": {"trusted_proxy": {"addresses": ["not-an-address"]}}},
    ],
)
def test_bad_config_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AuthConfig.model_validate(bad)
