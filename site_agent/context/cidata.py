"""Write cloud-init NoCloud ``cidata`` seeds (ISO9660 + Joliet + Rock Ridge, via pycdlib).

The seed is the only channel from the site to a guest at boot, and every value
in it comes from a user. Everything is validated here, before any byte is
written, and rendered in a fixed, flat YAML subset that both cloud-init and
the Stratus guest agent (``site_agent/guest/files/agent.sh``) read:

``meta-data``::

    instance-id: 0b6c2d6e-3f1a-4c55-9a7e-0d4f3c2b1a00
    local-hostname: web-1
    public-keys:
      - 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... alice@example'
    stratus-context:
      ROLE: 'db'
      GREETING: 'it''s $(not) run'

``network-config`` (cloud-init network config version 1; omitted when the
seed has no network, the guest then reports ip ``none``)::

    version: 1
    config:
      - type: physical
        name: eth0
        mac_address: '52:54:00:12:34:56'
        subnets:
          - type: static
            address: 198.18.0.10/24
            gateway: 198.18.0.1
            dns_nameservers:
              - 198.18.0.1

``user-data``: the user's text as given (possibly empty), at most 16 KiB.

Rules (each violation raises ``ValueError`` naming the field):

* ``instance_id``: a UUID in canonical 8-4-4-4-12 hex form (written lowercase);
* ``hostname``, ``ssh_keys``, ``context`` and ``user_data``: the rules of
  :mod:`core.guest_context`, the same functions the API applies when it
  admits a create, so a request accepted with 202 never fails here for a
  reason known at admission. Context values are written YAML single-quoted;
  the guest re-quotes them for the shell and never evaluates them;
* ``network``: see :class:`NetworkConfig`.
"""

from __future__ import annotations

import io
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pycdlib

from core.guest_context import (
    SSH_KEYS_MAX,
    USER_DATA_MAX_BYTES,
    validate_context,
    validate_hostname,
    validate_ssh_key,
    validate_user_data,
)

__all__ = [
    "USER_DATA_MAX_BYTES",
    "ContextSeed",
    "NetworkConfig",
    "render_meta_data",
    "render_network_config",
    "render_seed_files",
    "validate_instance_id",
    "write_cidata_iso",
]

DNS_MAX = 3
VOLUME_LABEL = "cidata"

_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_MAC_RE = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


def validate_instance_id(value: str) -> str:
    """Return ``value`` lowercased if it is a canonical UUID, else raise ``ValueError``."""
    if not isinstance(value, str) or not _UUID_RE.fullmatch(value):
        raise ValueError(f"instance_id must be a UUID (8-4-4-4-12 hex digits), got {value!r}")
    return value.lower()


@dataclass(frozen=True)
class NetworkConfig:
    """One static IPv4 interface, matched in the guest by ``mac``.

    ``address`` is the host address without prefix, ``prefix`` its length
    (1-32). ``gateway`` (optional) must lie in the same subnet and differ from
    ``address``; at most three ``dns`` servers. Invalid values raise
    ``ValueError`` at construction.
    """

    mac: str
    address: str
    prefix: int
    gateway: str | None = None
    dns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.mac, str) or not _MAC_RE.fullmatch(self.mac):
            raise ValueError(f"mac must look like 52:54:00:12:34:56, got {self.mac!r}")
        if int(self.mac[:2], 16) & 1:
            raise ValueError(f"mac {self.mac} is a multicast address")
        if isinstance(self.prefix, bool) or not isinstance(self.prefix, int):
            raise ValueError(f"prefix must be an integer, got {self.prefix!r}")
        if not 1 <= self.prefix <= 32:
            raise ValueError(f"prefix must be between 1 and 32, got {self.prefix}")
        address = _ipv4("address", self.address)
        interface = ipaddress.IPv4Interface(f"{address}/{self.prefix}")
        network = interface.network
        if self.prefix < 31 and address in (network.network_address, network.broadcast_address):
            raise ValueError(f"address {address} is the network or broadcast address of {network}")
        if self.gateway is not None:
            gateway = _ipv4("gateway", self.gateway)
            if gateway not in network or gateway == address:
                raise ValueError(f"gateway {gateway} must be another address in {network}")
        if not isinstance(self.dns, tuple):
            raise ValueError("dns must be a tuple of IPv4 addresses")
        if len(self.dns) > DNS_MAX:
            raise ValueError(f"at most {DNS_MAX} dns servers")
        for server in self.dns:
            _ipv4("dns server", server)

    @property
    def cidr(self) -> str:
        """``address/prefix``, as written into network-config."""
        return f"{ipaddress.IPv4Address(self.address)}/{self.prefix}"


def _ipv4(what: str, value: str) -> ipaddress.IPv4Address:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string IPv4 address, got {value!r}")
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError as exc:
        raise ValueError(f"{what} {value!r} is not an IPv4 address") from exc
    if address.is_multicast or address.is_unspecified or str(address) == "255.255.255.255":
        raise ValueError(f"{what} {value} is not a unicast address")
    return address


@dataclass(frozen=True)
class ContextSeed:
    """Everything a guest learns at boot. Invalid values raise ``ValueError`` at construction."""

    instance_id: str
    hostname: str
    ssh_keys: tuple[str, ...] = ()
    context: dict[str, str] = field(default_factory=dict)
    network: NetworkConfig | None = None
    user_data: str | None = None

    def __post_init__(self) -> None:
        validate_instance_id(self.instance_id)
        validate_hostname(self.hostname)
        if not isinstance(self.ssh_keys, tuple):
            raise ValueError("ssh_keys must be a tuple of strings")
        if len(self.ssh_keys) > SSH_KEYS_MAX:
            raise ValueError(f"at most {SSH_KEYS_MAX} ssh keys")
        for key in self.ssh_keys:
            validate_ssh_key(key)
        validate_context(self.context)
        if self.network is not None and not isinstance(self.network, NetworkConfig):
            raise ValueError("network must be a NetworkConfig or None")
        validate_user_data(self.user_data)


def yaml_single_quoted(value: str) -> str:
    """Quote ``value`` as a YAML single-quoted scalar (only ``'`` needs escaping, as ``''``)."""
    return "'" + value.replace("'", "''") + "'"


def render_meta_data(seed: ContextSeed) -> str:
    """Render the ``meta-data`` document (format in the module docstring)."""
    lines = [
        f"instance-id: {validate_instance_id(seed.instance_id)}",
        f"local-hostname: {validate_hostname(seed.hostname)}",
    ]
    if seed.ssh_keys:
        lines.append("public-keys:")
        lines.extend(f"  - {yaml_single_quoted(validate_ssh_key(k))}" for k in seed.ssh_keys)
    context = validate_context(seed.context)
    if context:
        lines.append("stratus-context:")
        lines.extend(f"  {key}: {yaml_single_quoted(value)}" for key, value in context.items())
    return "\n".join(lines) + "\n"


def render_network_config(network: NetworkConfig) -> str:
    """Render a cloud-init version 1 ``network-config`` (format in the module docstring)."""
    lines = [
        "version: 1",
        "config:",
        "  - type: physical",
        "    name: eth0",
        f"    mac_address: '{network.mac.lower()}'",
        "    subnets:",
        "      - type: static",
        f"        address: {network.cidr}",
    ]
    if network.gateway is not None:
        lines.append(f"        gateway: {ipaddress.IPv4Address(network.gateway)}")
    if network.dns:
        lines.append("        dns_nameservers:")
        lines.extend(f"          - {ipaddress.IPv4Address(server)}" for server in network.dns)
    return "\n".join(lines) + "\n"


def render_seed_files(seed: ContextSeed) -> dict[str, bytes]:
    """The seed files by name: meta-data, user-data and (with a network) network-config."""
    files = {
        "meta-data": render_meta_data(seed).encode("utf-8"),
        "user-data": (validate_user_data(seed.user_data) or "").encode("utf-8"),
    }
    if seed.network is not None:
        files["network-config"] = render_network_config(seed.network).encode("utf-8")
    return files


# ISO9660 level-1 names (8.3, upper case); Rock Ridge and Joliet carry the real names.
_ISO_NAMES = {
    "meta-data": "/METADATA.;1",
    "user-data": "/USERDATA.;1",
    "network-config": "/NETWORKC.;1",
}


def write_cidata_iso(seed: ContextSeed, path: Path) -> None:
    """Write ``seed`` as an ISO9660 volume labelled ``cidata`` (Joliet + Rock Ridge) at ``path``.

    The file is written to a temporary name beside ``path`` and renamed into
    place, so ``path`` is either the complete new seed or untouched. Raises
    ``ValueError`` for invalid seed contents (checked before writing).
    """
    path = Path(path)
    files = render_seed_files(seed)
    iso = pycdlib.PyCdlib()
    iso.new(
        interchange_level=1,
        vol_ident=VOLUME_LABEL,
        sys_ident="LINUX",
        joliet=3,
        rock_ridge="1.09",
    )
    for name, data in files.items():
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            _ISO_NAMES[name],
            rr_name=name,
            joliet_path=f"/{name}",
            file_mode=0o100444,
        )
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        iso.write(str(tmp))
        os.replace(tmp, path)
    finally:
        iso.close()
        if tmp.exists():
            tmp.unlink()
