"""The site agent's configuration file (TOML), as typed models.

``stratus config example site`` prints a commented example
(:data:`EXAMPLE_SITE_CONFIG`); ``docs/configuration.md`` is the reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from core.config import StrictModel


class TokenConfig(StrictModel):
    """An API token: only its ``sha256:<hex>`` hash is stored (``stratus token hash``)."""

    token_hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    account: str = Field(min_length=1, max_length=64)
    admin: bool = False
    groups: list[str] = Field(default_factory=list)


class HostConfig(StrictModel):
    """One hypervisor host (a libvirt URI)."""

    uri: str
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    tags: list[str] = Field(default_factory=list)
    cpu_overcommit: float = Field(default=4.0, gt=0)
    ram_overcommit: float = Field(default=1.0, gt=0)
    reserved_memory_mib: int = Field(default=512, ge=0)


class ImageConfig(StrictModel):
    """A bootable image installed by the site admin (local files)."""

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


class QuarantineConfig(StrictModel):
    period_seconds: float = Field(default=900.0, ge=0)
    sweep_interval_seconds: float = Field(default=30.0, gt=0)


class SiteAuthConfig(StrictModel):
    tokens: list[TokenConfig] = Field(default_factory=list)


class SiteConfig(StrictModel):
    site: SiteSection = Field(default_factory=SiteSection)
    hosts: list[HostConfig] = Field(min_length=1)
    images: list[ImageConfig] = Field(default_factory=list)
    vm: VmPolicy = Field(default_factory=VmPolicy)
    quarantine: QuarantineConfig = Field(default_factory=QuarantineConfig)
    auth: SiteAuthConfig = Field(default_factory=SiteAuthConfig)

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

[quarantine]
period_seconds = 900                # a killed VM's disks are kept this long
sweep_interval_seconds = 30

# Until certificate/OIDC login is configured, every call needs an API token.
# Make one with `stratus token new`; only its hash goes here.
[[auth.tokens]]
token_hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
account = "alice"
admin = false
groups = []
"""
