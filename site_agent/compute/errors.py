"""Errors raised by hypervisor drivers (the tree and HTTP answers: :mod:`site_agent.errors`)."""

from __future__ import annotations

from collections.abc import Mapping

from site_agent.errors import SiteAgentError


class ComputeError(SiteAgentError):
    """Root of hypervisor driver errors; libvirt errors are translated into these."""


class DomainCreateFailed(ComputeError):
    """A domain could not be defined or started; nothing was left behind."""


class DomainNotFound(ComputeError):
    """The operation needs a domain that does not exist."""


class HypervisorUnavailable(ComputeError):
    """The hypervisor host cannot be reached."""


class DeviceError(ComputeError):
    """A device attach or detach failed."""


class DiskNotAttached(DeviceError):
    """A detach named a guest device the domain has no disk at."""


class NetworkError(ComputeError):
    """A hypervisor network could not be defined, started or removed."""


class DomainStateError(ComputeError):
    """The domain exists but its state does not allow the operation (e.g. reboot while shut off)."""


class NoHostAvailable(ComputeError):
    """No hypervisor host of the site can take a VM; ``reasons`` maps each host URI to why."""

    def __init__(self, reasons: Mapping[str, str]) -> None:
        self.reasons: dict[str, str] = dict(reasons)
        if self.reasons:
            detail = "; ".join(f"{uri}: {why}" for uri, why in sorted(self.reasons.items()))
        else:
            detail = "no hosts"
        super().__init__(f"no host can take the VM ({detail})")
        self.details = {"hosts": self.reasons}
