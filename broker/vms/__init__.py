"""VMs through the broker: one module per job (see :mod:`broker`)."""
