"""The broker configuration: the example parses, mistakes are named, policy objects built."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from broker.config import EXAMPLE_BROKER_CONFIG, BrokerConfig
from core.config import ConfigError, load_config
from federation.bursting import BurstAction


def test_the_example_is_valid_and_means_what_it_says(tmp_path: Path) -> None:
    config = BrokerConfig.model_validate(tomllib.loads(EXAMPLE_BROKER_CONFIG))
    assert config.broker.heartbeat_timeout_seconds == 90
    assert [s.name for s in config.trusted_sites] == ["site-a"]
    assert config.tls is not None and config.tls.crl_policy == "strict"
    policy = config.burst_policy()
    assert policy.allowed_vos == frozenset({"atlas"}) and policy.when_denied is BurstAction.REJECT
    assert [c.name for c in policy.clouds] == ["aws"]
    assert policy.clouds[0].sizes["m1.small"].size_id == "t3.micro"
    assert config.database_url == "sqlite:////var/lib/stratus/broker/broker.db"


def test_tokens_and_secrets_can_come_from_files(tmp_path: Path) -> None:
    (tmp_path / "site.token").write_text("from-a-file-token\n")
    (tmp_path / "aws.secret").write_text("s3cr3t\n")
    config = BrokerConfig.model_validate(
        {
            "trusted_sites": [
                {"name": "a", "dn": "/CN=a", "token_file": str(tmp_path / "site.token")}
            ],
            "clouds": [{"name": "aws", "secret_file": str(tmp_path / "aws.secret")}],
        }
    )
    assert config.trusted_sites[0].api_token() == "from-a-file-token"
    assert config.clouds[0].public_cloud().secret == "s3cr3t"
    assert "from-a-file-token" not in repr(config) and "s3cr3t" not in repr(config)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"trusted_sites": [{"name": "a", "dn": "/CN=a"}]}, "exactly one of token and token_file"),
        (
            {"trusted_sites": [{"name": "a", "dn": "/CN=x", "token": "t" * 10}] * 2},
            "duplicate site name",
        ),
        (
            {
                "trusted_sites": [{"name": "aws", "dn": "/CN=x", "token": "t" * 10}],
                "clouds": [{"name": "aws"}],
            },
            "used by a site and a cloud",
        ),
        ({"clouds": [{"name": "gce", "driver": "gce"}]}, "clouds.0.driver"),
        ({"bursting": {"when_denied": "burst"}}, "bursting.when_denied"),
        ({"broker": {"name": "Not Valid"}}, "broker.name"),
        ({"tls": {"cert": "/c"}}, "tls.key"),
        ({"site_client": {"cert": "/c"}}, "cert and key go together"),
    ],
)
def test_mistakes_are_refused_with_the_field_named(data: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError) as info:
        BrokerConfig.model_validate(data)
    assert problem in str(info.value).replace("\n", " ") or problem in str(
        [".".join(map(str, e["loc"])) for e in info.value.errors()]
    )


def test_a_config_file_with_errors_is_one_readable_line(tmp_path: Path) -> None:
    path = tmp_path / "broker.toml"
    path.write_text("[broker]\nlisten_port = 99999\n[queue]\nbackfil = true\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, BrokerConfig)
    assert "broker.listen_port" in str(info.value) and "queue.backfil" in str(info.value)


def test_unreadable_token_and_secret_files_are_named(tmp_path: Path) -> None:
    config = BrokerConfig.model_validate(
        {
            "trusted_sites": [{"name": "a", "dn": "/CN=a", "token_file": str(tmp_path / "no")}],
            "clouds": [{"name": "aws", "secret_file": str(tmp_path / "none")}],
        }
    )
    assert config.check_files() == [
        f"trusted_sites a: cannot read {tmp_path / 'no'}",
        f"clouds aws: cannot read {tmp_path / 'none'}",
    ]
