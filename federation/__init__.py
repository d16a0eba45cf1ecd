"""Federation library used by the broker: placement across sites, failover, bursting, queueing,
and the one provider contract through which the broker runs anything anywhere.

Modules (see ``docs/federation-library.md``):

* :mod:`federation.model` — value objects: ``SiteCapacity`` (hosts with tags,
  address pools), ``PlacementRequest`` (size, image, static disks, a named pool
  or a pool type, an address, host tags), ``Candidate`` (with the pool the
  site must receive), ``PlacementDecision``, ``PublicCloudConfig``;
* :mod:`federation.capacity` — ``capacity_from_report``: a site's heartbeat
  (``core.site_report.SiteReport``) as placement reads it;
* :mod:`federation.constraints` — the ``--constraint 'site in [a,b]'`` parser;
* :mod:`federation.placement` — ``Placer``: filter and rank sites, fast
  (filters: :mod:`federation.placement_filters`; per-site aggregates and the
  score: :mod:`federation.placement_index`);
* :mod:`federation.attempts` — ``place_with_failover``: try candidates in order, record why;
* :mod:`federation.bursting` — ``BurstPolicy``: when and where to burst to a public cloud;
* :mod:`federation.queue` — ``DeferredQueue``: requests waiting for capacity;
* :mod:`federation.providers` — the contract and its implementations;
* :mod:`federation.errors` — the exception tree and its HTTP mapping.

The provider contract (:class:`federation.providers.base.ComputeProvider`)
-------------------------------------------------------------------------

* **Required**: ``create_vm`` (idempotent on the request's key; a failure
  leaves nothing), ``get_vm`` (``ProviderNotFound``), ``list_vms(include_done=)``,
  ``kill_vm(force=)`` (the VM afterwards, or None; missing is fine).
* **Optional**, declared in ``operations`` (:class:`~federation.providers.base.Operation`):
  stop, reboot, wait, console, events, disks, volumes, networks, images.
  An undeclared one raises ``OperationNotSupported`` and changes nothing. The
  peer site and the fake declare them all; the public cloud declares stop,
  reboot, console and wait (what EC2 and moto really do).
* **Users**: ``acting_for(user)`` is the provider acting for one
  authenticated user (``knows_users``: a peer site with a delegation signer,
  the fake); one that does not know users returns itself.
* **States**: every provider reports ``core.vm_state.VmState`` through an
  explicit table (``core.vm_state.SITE_STATE_MAP``,
  ``federation.providers.cloud.CLOUD_STATE_MAP``); provider-specific fields
  go in ``ProviderVM.extra``.
* **The site API client**: :class:`federation.providers.site_api.SiteApi` is
  the one typed client of a site agent's API (``core.resources`` shapes,
  delegation signing, retries, errors mapped once); only the peer provider
  uses it.

``federation`` imports only ``core`` and ``auth`` from the project, and has no
HTTP server of its own.
"""
