"""The Stratus guest image: a distribution kernel plus a busybox initramfs with a context agent.

``build_guest(output_dir)`` builds it from local Debian packages (see
:mod:`site_agent.guest.builder` and ``docs/guest-image.md``).
"""

from site_agent.guest.builder import GuestImage, build_guest
from site_agent.guest.errors import GuestImageError, MissingHostComponent

__all__ = ["GuestImage", "GuestImageError", "MissingHostComponent", "build_guest"]
