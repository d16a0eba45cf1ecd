"""Errors of the guest image builder (in the site agent's tree: :mod:`site_agent.errors`).

::

    GuestImageError          (the guest image cannot be built)
    └── MissingHostComponent (a kernel, module, busybox-static or qemu-img is missing)
"""

from site_agent.errors import SiteAgentError


class GuestImageError(SiteAgentError):
    """The guest image cannot be built; the message says why."""


class MissingHostComponent(GuestImageError):
    """A host package the builder needs is not installed (the message names it)."""
