"""The broker's HTTP API (``/api/v1``): the site API's resources plus ``/sites``."""
