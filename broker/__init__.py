"""The federation broker: one API over every site and public cloud.

Where to change what (one job per module):

* :mod:`broker.service` — :class:`~broker.service.Broker`, a small facade:
  start, close, the background tasks (monitor, orphan sweep);
  :mod:`broker.runtime` — what the services share, and who the broker acts
  as at a provider (the user, or the federation);
* :mod:`broker.vms` — ``models`` (tables, API shapes), ``store``,
  ``placing`` (where a VM goes: placed, burst, queued or refused),
  ``create``, ``queueing``, ``reading`` (show with wait, list, sync),
  ``operations`` (kill, stop, reboot, console, events, disks),
  ``sweeper`` (orphans), ``views``;
* :mod:`broker.sites` — ``registry`` (trusted sites, heartbeats,
  availability, every provider), ``service`` (heartbeats, ``/sites``),
  ``store``, ``models``;
* :mod:`broker.volumes`, :mod:`broker.networks`, :mod:`broker.images` —
  ``models``, (``store``), ``service`` each;
* :mod:`broker.api` — one module of routes per resource, mutual-TLS site
  authentication, ``middleware`` (the one place errors become HTTP);
* :mod:`broker.errors` — the exception tree; :mod:`broker.config`;
  :mod:`broker.app`, :mod:`broker.server`, :mod:`broker.cli` — running it.

The broker reaches sites and clouds only through
:class:`federation.providers.base.ComputeProvider` (peer sites over the one
typed site API client, clouds over libcloud) and never asks which kind it
holds. It uses ``federation``, ``auth`` and ``core``. See ``docs/federation.md``.
"""
