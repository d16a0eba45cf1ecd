"""Networks at the broker: every site's address pools, each with its ``site``.

The shapes are the site's (:mod:`core.resources.networks`) plus ``site``;
leases carry the broker's VM ids.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydField

from core.resources.networks import NetworkDetail, NetworkPublic
from core.site_report import SITE_NAME_PATTERN


class BrokerNetworkPublic(NetworkPublic):
    """A site's address pool (the site's shape) and the site it belongs to."""

    site: str


class BrokerNetworkList(BaseModel):
    networks: list[BrokerNetworkPublic]
    partial: bool = False
    warnings: list[str] = PydField(default_factory=list)


class BrokerNetworkDetail(NetworkDetail):
    """One pool with its range and the caller's leases (broker VM ids)."""

    site: str


class NetworkShowQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    site: str | None = PydField(
        default=None, pattern=SITE_NAME_PATTERN, description="the site of the pool"
    )
