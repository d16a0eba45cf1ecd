"""The cidata seed writer: ISO layout, rendered documents, and refusal of bad input.

That hostile values are inert inside a real guest is shown by
``tests/site_agent/guest/test_guest_boot.py`` and ``test_agent_script.py``.
"""

from __future__ import annotations

import io
from pathlib import Path

import pycdlib
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from site_agent.context import ContextSeed, NetworkConfig, write_cidata_iso
from site_agent.context.cidata import (
    USER_DATA_MAX_BYTES,
    render_meta_data,
    render_network_config,
    render_seed_files,
)

INSTANCE_ID = "0b6c2d6e-3f1a-4c55-9a7e-0d4f3c2b1a00"
KEY = (
    Ed25519PrivateKey.generate()
    .public_key()
    .public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    .decode()
)
NET = NetworkConfig(
    mac="52:54:00:12:34:56", address="198.18.0.10", prefix=24, gateway="198.18.0.1",
    dns=("198.18.0.1",),
)  # fmt: skip


def _seed(**overrides: object) -> ContextSeed:
    fields: dict[str, object] = {
        "instance_id": INSTANCE_ID,
        "hostname": "web-1",
        "ssh_keys": (f"{KEY} alice@example",),
        "context": {"ROLE": "db", "QUOTE": "it's"},
        "network": NET,
        "user_data": "#!/bin/sh\necho hi\n",
    }
    fields.update(overrides)
    return ContextSeed(**fields)  # type: ignore[arg-type]


def _read_iso(path: Path) -> tuple[pycdlib.PyCdlib, dict[str, bytes]]:
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    files = {}
    for name in ("meta-data", "user-data", "network-config"):
        out = io.BytesIO()
        try:
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
        except pycdlib.pycdlibexception.PyCdlibInvalidInput:
            continue
        files[name] = out.getvalue()
    return iso, files


def test_iso_has_label_names_and_contents(tmp_path: Path) -> None:
    seed = _seed()
    path = tmp_path / "seed.iso"
    write_cidata_iso(seed, path)

    iso, files = _read_iso(path)
    try:
        assert iso.pvd.volume_identifier.rstrip(b" ") == b"cidata"
        assert iso.has_rock_ridge()
        assert iso.has_joliet()
        joliet = io.BytesIO()
        iso.get_file_from_iso_fp(joliet, joliet_path="/meta-data")
    finally:
        iso.close()
    assert files == render_seed_files(seed)
    assert joliet.getvalue() == files["meta-data"]
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file is gone


def test_documents_are_yaml_with_the_intended_values() -> None:
    context = {
        "A": "it's",
        "B": "a: b # c",
        "C": "- [x] {y} &z *w |",
        "D": "",
        "E": " padded ",
        "F": "$(reboot)",
        "G": "true",
        "H": "0x1F",
    }
    seed = _seed(context=context)
    meta = yaml.safe_load(render_meta_data(seed))
    assert meta["instance-id"] == INSTANCE_ID
    assert meta["local-hostname"] == "web-1"
    assert meta["public-keys"] == [f"{KEY} alice@example"]
    assert meta["stratus-context"] == context  # quoted: no YAML type guessing
    network = yaml.safe_load(render_network_config(NET))
    assert network == {
        "version": 1,
        "config": [
            {
                "type": "physical",
                "name": "eth0",
                "mac_address": "52:54:00:12:34:56",
                "subnets": [
                    {
                        "type": "static",
                        "address": "198.18.0.10/24",
                        "gateway": "198.18.0.1",
                        "dns_nameservers": ["198.18.0.1"],
                    }
                ],
            }
        ],
    }


def test_optional_parts_are_omitted(tmp_path: Path) -> None:
    seed = ContextSeed(instance_id=INSTANCE_ID.upper(), hostname="h")
    files = render_seed_files(seed)
    assert set(files) == {"meta-data", "user-data"}
    assert files["user-data"] == b""
    assert files["meta-data"] == f"instance-id: {INSTANCE_ID}\nlocal-hostname: h\n".encode()
    net = NetworkConfig(mac="52:54:00:00:00:01", address="198.18.0.2", prefix=30)
    text = render_network_config(net)
    assert "gateway" not in text and "dns" not in text


@pytest.mark.parametrize(
    "hostname",
    ["", "-web", "web-", "we_b", "web 1", "web;reboot", "web\n1", "a" * 64, "a..b", ".a",
     "a.", "wéb", "$(id)", "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 63],
)  # fmt: skip
def test_bad_hostnames_are_refused(hostname: str) -> None:
    with pytest.raises(ValueError, match="hostname"):
        _seed(hostname=hostname)


@pytest.mark.parametrize("hostname", ["a", "web-1", "1", "a" * 63, "node7.site.example"])
def test_good_hostnames_are_accepted(hostname: str) -> None:
    assert f"local-hostname: {hostname}\n" in render_meta_data(_seed(hostname=hostname))


@pytest.mark.parametrize(
    "instance_id", ["", "not-a-uuid", INSTANCE_ID + "0", "{" + INSTANCE_ID + "}",
                    INSTANCE_ID.replace("-", ""), INSTANCE_ID + "\nlocal-hostname: x"],
)  # fmt: skip
def test_bad_instance_ids_are_refused(instance_id: str) -> None:
    with pytest.raises(ValueError, match="instance_id"):
        _seed(instance_id=instance_id)


@pytest.mark.parametrize(
    "key", ["", "1ABC", "A-B", "A B", "A=B", "A;B", "É", "A\n", "A" * 65, "$A"]
)
def test_bad_context_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="context key"):
        _seed(context={key: "v"})


@pytest.mark.parametrize(
    "value", ["a\nINJECTED: 1", "a\rb", "a\x00b", "tab\there", "\x1b[2J", "a\x7f", "a\x85b",
              "a\u2028b", "\ufeffbom", "\ud800"],
)  # fmt: skip
def test_context_values_with_control_characters_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="context value"):
        _seed(context={"K": value})


def test_context_value_size_limit() -> None:
    _seed(context={"K": "x" * 4096})
    with pytest.raises(ValueError, match="longer than 4096"):
        _seed(context={"K": "é" * 2049})


def test_user_data_limit_is_16_kib(tmp_path: Path) -> None:
    exact = "#!/bin/sh\n" + "x" * (USER_DATA_MAX_BYTES - 10)
    write_cidata_iso(_seed(user_data=exact), tmp_path / "ok.iso")
    with pytest.raises(ValueError, match="16 KiB"):
        _seed(user_data=exact + "x")
    with pytest.raises(ValueError, match="16 KiB"):
        _seed(user_data="é" * (USER_DATA_MAX_BYTES // 2 + 1))


@pytest.mark.parametrize(
    "key",
    [
        f'command="rm -rf /" {KEY}',
        "ssh-foo AAAA",
        "ssh-ed25519",
        "ssh-ed25519 not*base64",
        "ssh-rsa " + KEY.split()[1],  # body says ed25519
        f"{KEY} comment\nssh-ed25519 AAAA injected",
        f"{KEY} \x1b[2J",
    ],
)
def test_bad_ssh_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="ssh key"):
        _seed(ssh_keys=(key,))


def test_ssh_keys_must_be_a_tuple() -> None:
    with pytest.raises(ValueError, match="tuple"):
        _seed(ssh_keys=[KEY])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mac": "52:54:00:12:34"}, "mac"),
        ({"mac": "01:00:5e:00:00:01"}, "multicast"),
        ({"mac": "52:54:00:12:34:56\n"}, "mac"),
        ({"address": "198.18.0.300"}, "IPv4"),
        ({"address": "2001:db8::1"}, "IPv4"),
        ({"address": "198.18.0.0"}, "network or broadcast"),
        ({"address": "198.18.0.255"}, "network or broadcast"),
        ({"address": "224.0.0.1"}, "unicast"),
        ({"prefix": 0}, "prefix"),
        ({"prefix": 33}, "prefix"),
        ({"prefix": True}, "prefix"),
        ({"prefix": "24"}, "prefix"),
        ({"gateway": "198.18.1.1"}, "gateway"),
        ({"gateway": "198.18.0.10"}, "gateway"),
        ({"gateway": "198.18.0.1; reboot"}, "IPv4"),
        ({"dns": ("198.18.0.1",) * 4}, "dns"),
        ({"dns": ["198.18.0.1"]}, "dns"),
        ({"dns": ("nameserver",)}, "IPv4"),
    ],
)
def test_bad_network_configs_are_refused(fields: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "mac": "52:54:00:12:34:56", "address": "198.18.0.10", "prefix": 24,
        "gateway": "198.18.0.1", "dns": ("198.18.0.1",),
    }  # fmt: skip
    with pytest.raises(ValueError, match=message):
        NetworkConfig(**(base | fields))  # type: ignore[arg-type]


def test_point_to_point_prefixes_are_allowed() -> None:
    assert NetworkConfig(mac="52:54:00:00:00:01", address="198.18.0.0", prefix=31).cidr == (
        "198.18.0.0/31"
    )
    assert NetworkConfig(mac="52:54:00:00:00:01", address="198.18.0.9", prefix=32).cidr == (
        "198.18.0.9/32"
    )


def test_values_are_checked_again_when_writing(tmp_path: Path) -> None:
    path = tmp_path / "seed.iso"
    seed = _seed()
    write_cidata_iso(seed, path)
    before = path.read_bytes()
    seed.context["LATE"] = "changed after construction\nINJECTED: 1"  # the dict is mutable
    with pytest.raises(ValueError, match="control character"):
        write_cidata_iso(seed, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.iso"]
