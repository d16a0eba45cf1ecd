"""A site's heartbeat: the one report model the site sends and the broker validates.

The site agent builds a :class:`SiteReport` from its hosts, pools and image
cache (``site_agent.capacity``) and posts it to
``POST /api/v1/sites/{name}/heartbeat`` over mutual TLS
(``site_agent.federation_link``); the broker validates the same model and
feeds placement with it (``broker.sites``). Both sides import it from here,
so they cannot disagree on a field.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.resources.networks import POOL_NAME_PATTERN, NetworkType
from core.resources.vms import HostTag

SITE_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"


def absolute_url(value: str) -> str:
    """``value`` without a trailing slash if it is an absolute http(s) URL, else ``ValueError``."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an absolute http(s) URL")
    return value.rstrip("/")


class _Report(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HostReport(_Report):
    """Free capacity of one hypervisor host, as the site's own host placement counts it.

    ``simulated``: the host is the in-memory fake driver (``fake://``), not a
    hypervisor: VMs placed there are simulated and run nothing.
    """

    name: str | None = Field(default=None, max_length=255)
    free_cpus: int = Field(ge=0)
    free_memory_mib: int = Field(ge=0)
    tags: list[HostTag] = Field(default_factory=list, max_length=64)
    simulated: bool = False


class PoolReport(_Report):
    """One address pool of the site: its name, type, range and free addresses."""

    name: str = Field(pattern=POOL_NAME_PATTERN)
    type: NetworkType
    cidr: str = Field(max_length=64)
    free: int = Field(ge=0)
    default: bool = False


class SiteReport(_Report):
    """A site's heartbeat: where its API is, and what it can take right now.

    ``cached_images``: public images a VM can boot at once;
    ``fetchable_images``: public images registered but not cached yet
    (``None``: the site fetches any image); ``networks``: its address pools;
    ``free_addresses``: free leases per pool type (the sum over ``networks``);
    ``allowed_vos``: VOs/groups allowed to use the site (``None``: all).
    """

    site: str = Field(pattern=SITE_NAME_PATTERN)
    public_url: str = Field(min_length=8, max_length=2048)
    hosts: list[HostReport] = Field(default_factory=list, max_length=100_000)
    cached_images: list[str] = Field(default_factory=list, max_length=10_000)
    fetchable_images: list[str] | None = Field(default_factory=list, max_length=10_000)
    networks: list[PoolReport] = Field(default_factory=list, max_length=1_000)
    free_addresses: dict[NetworkType, int] = Field(default_factory=dict)
    allowed_vos: list[str] | None = None
    location: dict[str, str] = Field(default_factory=dict, max_length=32)
    price_per_hour: float = Field(default=0.0, ge=0)
    available: bool = True
    version: str | None = Field(default=None, max_length=64)

    @field_validator("public_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return absolute_url(value)

    @property
    def simulated(self) -> bool:
        """True when every host of the site is simulated (``fake://``): its VMs run nothing."""
        return bool(self.hosts) and all(h.simulated for h in self.hosts)


class HeartbeatAck(BaseModel):
    """The broker's answer to a heartbeat."""

    site: str
    registered: bool = Field(description="true on the heartbeat that registered the site")
    heartbeat_timeout_seconds: float
