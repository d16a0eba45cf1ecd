"""The site agent's configuration file (TOML), as typed models.

``stratus config example site`` prints a commented example
(:data:`EXAMPLE_SITE_CONFIG`); ``docs/configuration.md`` is the reference.

This module imports nothing of the site agent: every other module may
import it.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from auth.config import AuthConfig
from core.config import StrictModel
from core.site_report import absolute_url


class HostConfig(StrictModel):
    """One hypervisor host (a libvirt URI)."""

    uri: str
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    tags: list[str] = Field(default_factory=list)
    cpu_overcommit: float = Field(default=4.0, gt=0)
    ram_overcommit: float = Field(default=1.0, gt=0)
    reserved_memory_mib: int = Field(default=512, ge=0)


class ImageConfig(StrictModel):
    """A bootable image installed by the site admin (local files, used in place, never evicted)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    disk: Path
    format: Literal["qcow2", "raw"] = "qcow2"
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str | None = None
    description: str = ""


class SiteSection(StrictModel):
    name: str = Field(default="site", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=8440, ge=0, le=65535)
    state_dir: Path = Path("/var/lib/stratus/site")
    database_url: str | None = None  # default: sqlite file in state_dir


class VmPolicy(StrictModel):
    stop_timeout_seconds: float = Field(default=30.0, gt=0)
    ready_timeout_seconds: float = Field(default=300.0, gt=0)
    max_count_per_request: int = Field(default=20, ge=1)
    monitor_interval_seconds: float = Field(default=5.0, gt=0)


class ImageCacheConfig(StrictModel):
    """The image cache (``[image_cache]``); see docs/images.md."""

    max_bytes: int = Field(default=50 * 1024**3, ge=0)
    connect_timeout_seconds: float = Field(default=30.0, gt=0)
    read_timeout_seconds: float = Field(default=120.0, gt=0)
    use_env_proxy: bool = False


class QuarantineConfig(StrictModel):
    period_seconds: float = Field(default=900.0, ge=0)
    sweep_interval_seconds: float = Field(default=30.0, gt=0)


class NetworkPoolConfig(StrictModel):
    """An address pool (``[[networks]]``) and the hypervisor network its VMs plug into.

    Addresses handed out automatically are ``range_start``..``range_end``
    (default: every host address of ``cidr``) minus ``gateway``,
    ``host_address`` and the ``fixed`` ones; ``fixed`` addresses are leased
    only to a create that asks for one by ``address``. See docs/networking.md.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,23}$")
    type: Literal["public", "local", "private"]
    cidr: IPv4Network
    gateway: IPv4Address | None = None
    dns: list[IPv4Address] = Field(default_factory=list, max_length=3)
    range_start: IPv4Address | None = None
    range_end: IPv4Address | None = None
    fixed: list[IPv4Address] = Field(default_factory=list, max_length=4096)
    host_address: IPv4Address | None = None
    managed: bool = True
    libvirt_network: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.+-]{1,64}$")
    bridge: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,15}$")

    @model_validator(mode="after")
    def _addresses_in_subnet(self) -> NetworkPoolConfig:
        net = self.cidr
        if net.prefixlen > 30:
            raise ValueError(f"cidr {net} is too small: use a /30 or larger")
        special = {net.network_address, net.broadcast_address}
        named = [("gateway", self.gateway), ("host_address", self.host_address)]
        named += [("range_start", self.range_start), ("range_end", self.range_end)]
        named += [("fixed", a) for a in self.fixed]
        for what, address in named:
            if address is not None and (address not in net or address in special):
                raise ValueError(f"{what} {address} is not a host address of {net}")
        if self.range_start and self.range_end and self.range_start > self.range_end:
            raise ValueError(f"range_start {self.range_start} is after range_end {self.range_end}")
        if len(set(self.fixed)) != len(self.fixed):
            raise ValueError("fixed lists an address twice")
        if not self.managed and self.libvirt_network is None:
            raise ValueError("managed = false needs libvirt_network (the existing network to use)")
        return self


class QuotaConfig(StrictModel):
    """Per-account limits on persistent volumes (every account gets the same)."""

    volumes_count: int = Field(default=20, ge=0)
    volumes_total_gib: int = Field(default=1024, ge=0)


class FederationLinkConfig(StrictModel):
    """``[federation]``: the broker this site joins, and what the site tells it.

    The site sends heartbeats to ``broker_url`` over mutual TLS with
    ``site_cert``/``site_key``, trusting ``ca`` (a CA file or hashed
    directory) for the broker's certificate (``site_agent.federation_link``).
    The same trust admits the broker's delegated requests (a user the broker
    authenticated, ``Stratus-Delegation``): their assertions must be signed
    by a certificate that chains to ``ca`` and is the broker's, by its DN
    ``broker_dn`` if given, else by the host of ``broker_url``.
    """

    broker_url: str
    site_cert: Path
    site_key: Path
    ca: Path | None = None  # CA file or hashed directory for the broker's certificate
    broker_dn: str | None = Field(default=None, min_length=3, max_length=1024)
    public_url: str
    interval_seconds: float = Field(default=30.0, gt=0)
    timeout_seconds: float = Field(default=10.0, gt=0)
    price_per_hour: float = Field(default=0.0, ge=0)
    location: dict[str, str] = Field(default_factory=dict)
    allowed_vos: list[str] | None = None

    @field_validator("public_url")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return absolute_url(value)

    @field_validator("broker_url")
    @classmethod
    def _https(cls, value: str) -> str:
        if urlsplit(value).scheme != "https":
            raise ValueError("broker_url must be https: sites register over mutual TLS")
        return absolute_url(value)


class SiteConfig(StrictModel):
    site: SiteSection = Field(default_factory=SiteSection)
    hosts: list[HostConfig] = Field(min_length=1)
    images: list[ImageConfig] = Field(default_factory=list)
    vm: VmPolicy = Field(default_factory=VmPolicy)
    quarantine: QuarantineConfig = Field(default_factory=QuarantineConfig)
    image_cache: ImageCacheConfig = Field(default_factory=ImageCacheConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    federation: FederationLinkConfig | None = None  # joins a broker (docs/federation.md)
    networks: list[NetworkPoolConfig] = Field(default_factory=list, max_length=16)
    quotas: QuotaConfig = Field(default_factory=QuotaConfig)

    @field_validator("networks")
    @classmethod
    def _unique_network_names(cls, pools: list[NetworkPoolConfig]) -> list[NetworkPoolConfig]:
        for attr in ("name", "libvirt_network", "bridge"):
            values = [getattr(p, attr) for p in pools if getattr(p, attr) is not None]
            dupes = {v for v in values if values.count(v) > 1}
            if dupes:
                raise ValueError(f"duplicate network {attr}: {', '.join(sorted(dupes))}")
        return pools

    @field_validator("images")
    @classmethod
    def _unique_image_names(cls, images: list[ImageConfig]) -> list[ImageConfig]:
        names = [i.name for i in images]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate image names: {', '.join(sorted(dupes))}")
        return images

    @property
    def database_url(self) -> str:
        return self.site.database_url or f"sqlite:///{self.site.state_dir / 'site.db'}"


EXAMPLE_SITE_CONFIG = """\
# Stratus site agent configuration (TOML). Reference: docs/configuration.md

[site]
name = "site-a"                     # lower-case, used in listings and by the broker
listen_host = "127.0.0.1"
listen_port = 8440                  # 0 = let the OS choose
state_dir = "/var/lib/stratus/site-a"   # VM disks, console logs, quarantine, SQLite DB
# database_url = "postgresql://stratus@127.0.0.1:5432/stratus"  # default: SQLite in state_dir

# One [[hosts]] table per hypervisor host. The site places each VM on the
# host with the most free memory that satisfies its requirements.
[[hosts]]
uri = "qemu:///system"
accel = "auto"                      # auto (probe whether KVM really boots), kvm or tcg
tags = []                           # e.g. ["ssd"]; matched by placement requirements
cpu_overcommit = 4.0                # vCPUs per physical CPU
ram_overcommit = 1.0
reserved_memory_mib = 512           # kept for the host itself

# Images the site offers (local files). `stratus image build-guest` builds the
# small busybox guest used by the demo and the tests.
[[images]]
name = "busybox"
disk = "/var/lib/stratus/guest/disk.qcow2"
format = "qcow2"
kernel = "/var/lib/stratus/guest/vmlinuz"      # optional: direct kernel boot
initrd = "/var/lib/stratus/guest/initrd.img"
cmdline = "console=ttyS0 quiet"
description = "busybox test guest"

[vm]
stop_timeout_seconds = 30           # clean ACPI shutdown, then destroy
ready_timeout_seconds = 300         # how long to watch the console for readiness
max_count_per_request = 20
monitor_interval_seconds = 5        # how often hypervisor state is reconciled

[image_cache]
max_bytes = 53687091200             # downloaded images kept (LRU eviction of unused ones)
connect_timeout_seconds = 30
read_timeout_seconds = 120          # without a byte from the server
use_env_proxy = false               # true: honour HTTP(S)_PROXY for image downloads

[quarantine]
period_seconds = 900                # a killed VM's disks are kept this long
sweep_interval_seconds = 30

# Address pools (docs/networking.md). The first one is the default network of
# a VM; the agent creates each pool's isolated libvirt network on every host.
# With no [[networks]] VMs get no network interface.
[[networks]]
name = "public"
type = "public"                     # public | local | private
cidr = "198.18.0.0/24"
gateway = "198.18.0.1"
dns = ["198.18.0.1"]
host_address = "198.18.0.1"         # optional: the host's address on the bridge
range_start = "198.18.0.10"         # optional: default the whole subnet
range_end = "198.18.0.200"
fixed = ["198.18.0.250"]            # only leased when asked for by address
# managed = false                   # use an existing libvirt network instead:
# libvirt_network = "br-public"

# Persistent volumes per account (docs/storage.md).
[quotas]
volumes_count = 20
volumes_total_gib = 1024

# Join a federation (docs/federation.md): heartbeats to the broker over mutual
# TLS, and the requests the broker makes for its users (verified against the same CA).
# [federation]
# broker_url = "https://broker.example.org:8450"
# site_cert = "/etc/grid-security/site-a/hostcert.pem"
# site_key = "/etc/grid-security/site-a/hostkey.pem"
# ca = "/etc/grid-security/certificates"   # CA file or directory for the broker's certificate
# broker_dn = "/DC=org/DC=example/CN=broker.example.org"  # default: the host of broker_url
# public_url = "https://site-a.example.org:8440"
# interval_seconds = 30
# price_per_hour = 0.01
# location = { country = "FR" }

# Authentication (docs/authentication.md): API tokens, grid certificates and
# proxies (VOMS), OIDC issuers, local passwords. Every call needs one of them.
# An API token: make one with `stratus token new`; only its hash goes here.
[[auth.tokens]]
token_hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
account = "alice"
admin = false
groups = []

# Grid certificates over HTTPS (the agent then serves https://).
# [auth.x509]
# enabled = true
# ca_dir = "/etc/grid-security/certificates"
# crl_policy = "strict"                 # strict | if-present | best-effort | off
# server_cert = "/etc/grid-security/hostcert.pem"
# server_key = "/etc/grid-security/hostkey.pem"
# [auth.voms]
# vomsdir = "/etc/grid-security/vomsdir"
# [[auth.oidc.issuers]]
# issuer = "https://aai.example.org/oidc/"
# audience = ["stratus"]
"""
