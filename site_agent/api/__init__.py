"""The site agent's HTTP API (``/api/v1``)."""
