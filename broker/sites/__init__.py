"""The federation's sites: registry, heartbeats, the ``/sites`` listing."""
