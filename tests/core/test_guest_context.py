"""core.guest_context and VmCreate: the admission rules are the seed's rules."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from core.guest_context import USER_DATA_MAX_BYTES, validate_ssh_key
from core.resources.vms import VmCreate


def ssh_key(kind: str = "ssh-ed25519", comment: str = "alice@example") -> str:
    name = kind.encode()
    blob = len(name).to_bytes(4, "big") + name + b"\x00\x00\x00\x20" + b"k" * 32
    return f"{kind} {base64.b64encode(blob).decode()} {comment}"


def test_a_real_shaped_key_passes_and_is_normalised() -> None:
    key = ssh_key()
    assert validate_ssh_key("  " + key + "  ") == key
    assert VmCreate.model_validate({"image": "i", "ssh_keys": [key]}).ssh_keys == [key]


@pytest.mark.parametrize(
    "key",
    [
        "ssh-ed25519 not-base64!! x",
        "ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x07ssh-rsa").decode(),  # other type
        'command="rm -rf /" ' + ssh_key(),  # authorized_keys options
        ssh_key(comment="a\x00b"),
        ssh_key(comment="a\tb"),
    ],
)
def test_bad_ssh_keys_are_refused_at_admission(key: str) -> None:
    with pytest.raises(ValidationError):
        VmCreate.model_validate({"image": "i", "ssh_keys": [key]})


@pytest.mark.parametrize("value", ["a\tb", "a\u2028b", "a\nb", "\ufeffx", "a\x85b"])
def test_context_values_with_controls_are_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="control character"):
        VmCreate.model_validate({"image": "i", "context": {"k": value}})


def test_user_data_is_limited_in_bytes_not_characters() -> None:
    ok = "é" * (USER_DATA_MAX_BYTES // 2)
    assert VmCreate.model_validate({"image": "i", "user_data": ok}).user_data == ok
    with pytest.raises(ValidationError, match="bytes"):
        VmCreate.model_validate({"image": "i", "user_data": ok + "é"})


def test_lone_surrogates_are_refused() -> None:
    with pytest.raises(ValidationError, match="Unicode"):
        VmCreate.model_validate({"image": "i", "user_data": "\ud800"})


@pytest.mark.parametrize("tag", ["gpu", "rack=a1", "zone:fr"])
def test_host_tags(tag: str) -> None:
    assert VmCreate.model_validate({"image": "i", "host_tags": [tag]}).host_tags == [tag]
    with pytest.raises(ValidationError):
        VmCreate.model_validate({"image": "i", "host_tags": [tag + " x"]})
