"""The ``stratus`` command."""
