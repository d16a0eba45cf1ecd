"""Address pools, leases and MACs for the site's networks (``public``, ``local``, ``private``).

* :mod:`.pools` -- the configured pools (``[[networks]]``): which addresses
  each hands out, and the isolated hypervisor network it maps to;
* :mod:`.models` -- the ``network_leases`` table and the API shapes;
* :mod:`.repository` -- lease SQL (synchronous; run in a thread);
* :mod:`.service` -- what the VM lifecycle and the API call.

Exception tree (module :mod:`.errors`)::

    NetworkPoolError
    ├── UnknownPool          (no pool of that name / the site has no networks)
    ├── PoolExhausted        (no free address left in the pool)
    └── AddressUnavailable   (a requested address cannot be leased)
        ├── AddressOutsidePool
        └── AddressInUse

They are translated into HTTP errors by the VM lifecycle and the API routes.
"""
