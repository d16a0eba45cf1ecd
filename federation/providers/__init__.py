"""Compute providers: one contract (:class:`ComputeProvider`) over peer sites, public clouds
and a fake.

* :class:`~federation.providers.peer.PeerSiteProvider` — a Stratus site agent,
  over :class:`~federation.providers.site_api.SiteApi` (the one typed client
  of the site API);
* :class:`~federation.providers.cloud.LibcloudProvider` — a public cloud through a
  libcloud driver (EC2; ``moto_server`` in tests);
* :class:`~federation.providers.fake.FakeProvider` — in memory, for tests and demos.

The implementations are imported from their modules (importing this package
does not import libcloud or httpx).
"""

from federation.providers.base import (
    ComputeProvider,
    Operation,
    ProviderVM,
    VMCreateRequest,
    WaitFor,
)

__all__ = ["ComputeProvider", "Operation", "ProviderVM", "VMCreateRequest", "WaitFor"]
