"""The resource shapes of the Stratus API, shared by every side of it.

A site agent serves these shapes; the broker serves the same ones as a
superset (its resources add where each one lives: ``site``, ``kind``...);
the typed site API client (``federation.providers.site_api``) and the SDK
parse them. Request models refuse unknown fields (``extra="forbid"``) and
apply the same rules at the site and at the broker, so a request the broker
admits is never refused by the site for a reason known at admission.

* :mod:`core.resources.vms` — VM create/list/show/stop bodies and the VM resource;
* :mod:`core.resources.volumes` — volumes, attachments and a VM's disks;
* :mod:`core.resources.images` — image registration and the image resource;
* :mod:`core.resources.networks` — address pool types and the pool resource.
"""
