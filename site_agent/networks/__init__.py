"""Address pools, leases and MACs for the site's networks (``public``, ``local``, ``private``).

* :mod:`.pools` -- the configured pools (``[[networks]]``): which addresses
  each hands out, and the isolated hypervisor network it maps to;
* :mod:`.models` -- the ``network_leases`` table (API shapes: ``core.resources.networks``);
* :mod:`.repository` -- lease SQL (synchronous; run in a thread);
* :mod:`.service` -- what the VM lifecycle and the API call.

Errors (:mod:`.errors`) are part of the site agent's tree, drawn with
their HTTP answers in :mod:`site_agent.errors`.
"""
