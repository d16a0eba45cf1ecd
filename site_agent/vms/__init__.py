"""Virtual machines: models, state machine, lifecycle, HTTP routes."""
