"""Compute providers: one narrow interface (:class:`ComputeProvider`) over peer sites and
public clouds.

* :class:`~federation.providers.peer.PeerSiteProvider` — a Stratus site agent over HTTP;
* :class:`~federation.providers.cloud.LibcloudProvider` — a public cloud through a
  libcloud driver (EC2; ``moto_server`` in tests);
* :class:`~federation.providers.fake.FakeProvider` — in memory, for tests and demos.

The implementations are imported from their modules (importing this package
does not import libcloud or httpx).
"""

from federation.providers.base import ComputeProvider, ProviderVM, VMCreateRequest, VMState

__all__ = ["ComputeProvider", "ProviderVM", "VMCreateRequest", "VMState"]
