"""Disk files: qcow2 overlays and images (``qemu-img``)."""
