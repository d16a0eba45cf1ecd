"""Errors of the network pools (the tree and HTTP answers: :mod:`site_agent.errors`)."""

from __future__ import annotations

from site_agent.errors import SiteAgentError


class NetworkPoolError(SiteAgentError):
    """Root of the address pool errors."""


class UnknownPool(NetworkPoolError):
    """No pool of that name at this site (or the site has no networks at all)."""


class PoolExhausted(NetworkPoolError):
    """Every address of the pool is leased."""


class AddressUnavailable(NetworkPoolError):
    """A requested address cannot be leased."""


class AddressOutsidePool(AddressUnavailable):
    """The requested address is not one the pool leases."""


class AddressInUse(AddressUnavailable):
    """The requested address is already leased to another VM."""
