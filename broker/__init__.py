"""The federation broker: one API over every site and public cloud.

Modules:

* :mod:`broker.config` — the broker's TOML configuration;
* :mod:`broker.models` — ``broker_*`` tables and the API shapes;
* :mod:`broker.store` — the database (SQLite or PostgreSQL);
* :mod:`broker.sites` — trusted sites, heartbeats, availability, the site provider;
* :mod:`broker.service` — :class:`~broker.service.Broker`: placement with failover,
  forwarding, aggregated listings, bursting, the deferred queue, the orphan sweep;
* :mod:`broker.api` — HTTP routes, mutual-TLS site authentication, error mapping;
* :mod:`broker.app`, :mod:`broker.server`, :mod:`broker.cli` — running it;
* :mod:`broker.errors` — the exception tree.

The broker uses ``federation``, ``auth`` and ``core``; it talks to sites over
HTTP only.  See ``docs/federation.md``.
"""
