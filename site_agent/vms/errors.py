"""Errors of the VM lifecycle (tree and HTTP answers drawn in :mod:`site_agent.errors`)."""

from __future__ import annotations

from collections.abc import Mapping

from site_agent.errors import SiteAgentError


class VmError(SiteAgentError):
    """Root of the VM lifecycle's errors."""


class VmNotFound(VmError):
    """No such VM, or one the caller may not see (existence is not leaked)."""

    def __init__(self, vm_id: str) -> None:
        super().__init__(f"no VM with id {vm_id!r}")
        self.vm_id = vm_id


class VmForbidden(VmError):
    """The caller may not do this (e.g. share a VM with a group they are not in)."""


class InvalidVmState(VmError):
    """The VM's state does not allow the operation (stop a VM that is not running...)."""


class NoCapacity(VmError):
    """No host of the site can take the VM; ``details["hosts"]`` says why, per host URI."""

    def __init__(self, message: str, reasons: Mapping[str, str]) -> None:
        super().__init__(message)
        self.details = {"hosts": dict(reasons)}


class SavePending(VmError):
    """A kill would drop the pending save of the VM's root disk as ``image``."""

    def __init__(self, message: str, image: str) -> None:
        super().__init__(message)
        self.image = image
        self.details = {"image": image}


class HypervisorFailed(VmError):
    """The hypervisor failed while freeing a VM; a retry (or the monitor) finishes it."""


class DeviceFailed(VmError):
    """A disk could not be hot-plugged or unplugged (the guest or hypervisor refused)."""
