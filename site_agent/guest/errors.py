"""Errors of the guest image builder.

Exception tree::

    GuestImageError          (root: the guest image cannot be built)
    └── MissingHostComponent (a kernel, module, busybox-static or qemu-img is missing)
"""


class GuestImageError(Exception):
    """The guest image cannot be built; the message says why."""


class MissingHostComponent(GuestImageError):
    """A host package the builder needs is not installed (the message names it)."""
