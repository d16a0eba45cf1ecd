"""Volumes through the broker: records, store, the forwarding service."""
