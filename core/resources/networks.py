"""Address pools: their types and how the API shows them (``GET /networks``)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel

#: A site's pool name (``[[networks]] name``), also what a VM create's ``network`` names.
POOL_NAME_PATTERN = r"^[a-z][a-z0-9-]{0,23}$"


class NetworkType(StrEnum):
    """The three kinds of address pool of a Stratus site.

    ``public``: addresses reachable from outside the site; ``local``:
    site-internal (behind NAT); ``private``: host-only.
    """

    PUBLIC = "public"
    LOCAL = "local"
    PRIVATE = "private"


class LeasePublic(BaseModel):
    """One address and MAC leased to a VM."""

    address: str
    mac: str
    vm_id: str
    owner: str
    created_at: datetime


class NetworkPublic(BaseModel):
    """A pool as the API shows it."""

    name: str
    type: NetworkType
    cidr: str
    gateway: str | None
    dns: list[str]
    default: bool
    size: int
    leased: int
    free: int


class NetworkList(BaseModel):
    networks: list[NetworkPublic]


class NetworkDetail(NetworkPublic):
    """A pool with its range and leases (admins: every lease; users: their own)."""

    range_start: str
    range_end: str
    fixed: list[str]
    leases: list[LeasePublic]
