"""Federation library used by the broker: placement across sites, failover, bursting, queueing.

Modules (see ``docs/federation-library.md``):

* :mod:`federation.model` — value objects: ``SiteCapacity``, ``PlacementRequest``,
  ``Candidate``, ``PlacementDecision``, ``PublicCloudConfig``;
* :mod:`federation.constraints` — the ``--constraint 'site in [a,b]'`` parser;
* :mod:`federation.placement` — ``Placer``: filter and rank sites, fast;
* :mod:`federation.attempts` — ``place_with_failover``: try candidates in order, record why;
* :mod:`federation.bursting` — ``BurstPolicy``: when and where to burst to a public cloud;
* :mod:`federation.queue` — ``DeferredQueue``: requests waiting for capacity;
* :mod:`federation.providers` — ``ComputeProvider`` and its peer-site (HTTP),
  public-cloud (libcloud) and fake implementations;
* :mod:`federation.errors` — the exception tree and its HTTP mapping.

``federation`` imports only ``core`` and ``auth`` from the project, and has no
HTTP server of its own.
"""
