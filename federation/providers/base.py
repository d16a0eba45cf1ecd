"""The one interface the broker uses to run VMs somewhere: :class:`ComputeProvider`.

Value objects: :class:`VMCreateRequest` (what to create, with its
idempotency key), :class:`ProviderVM` (a VM as the provider reports it) and
the closed :class:`VMState` enum, with explicit mapping tables from each
backend's states in the implementations.

Errors (tree in :mod:`federation.errors`): ``SiteRefused`` — the provider
answered no; ``SiteFailed`` — it is broken or unreachable after retries;
``VMNotFound`` — no such VM.  Implementations translate every third-party
exception into these with ``raise ... from exc``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from federation.model import NetworkType


class VMState(StrEnum):
    """VM states of the OpenNebula model, as every provider reports them.

    ``unknown`` is used when a backend reports a state with no mapping.
    """

    PENDING = "pending"
    PROLOG = "prolog"
    BOOT = "boot"
    RUNNING = "running"
    SHUTDOWN = "shutdown"
    STOPPED = "stopped"
    SUSPENDED = "suspended"
    DONE = "done"
    FAILED = "failed"
    UNKNOWN = "unknown"

    @property
    def is_active(self) -> bool:
        """False once the VM is gone (``done``) or could not be made (``failed``)."""
        return self not in (VMState.DONE, VMState.FAILED)


def parse_state(value: object) -> VMState:
    """A :class:`VMState` from a string; anything unknown is ``UNKNOWN``."""
    try:
        return VMState(str(value).lower())
    except ValueError:
        return VMState.UNKNOWN


@dataclass(frozen=True, eq=False)
class VMCreateRequest:
    """One VM to create.

    ``vm_id`` is the broker's id for the VM (providers may tag the VM with
    it); ``idempotency_key`` makes a retried create return the VM made by
    the first try instead of making a second one.  Size is either
    ``instance_type`` or ``vcpus`` + ``memory_mib``, not both.
    """

    vm_id: str
    idempotency_key: str
    image: str
    name: str
    instance_type: str | None = None
    vcpus: int | None = None
    memory_mib: int | None = None
    network: NetworkType | None = None
    ssh_keys: tuple[str, ...] = ()
    user_data: str | None = None
    context: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.vm_id or not self.idempotency_key:
            raise ValueError("vm_id and idempotency_key are required")
        if not self.image or not self.name:
            raise ValueError("image and name are required")
        if self.instance_type is not None and (
            self.vcpus is not None or self.memory_mib is not None
        ):
            raise ValueError("give either instance_type or vcpus/memory_mib, not both")
        if self.instance_type is None and (self.vcpus is None or self.memory_mib is None):
            raise ValueError("give instance_type, or vcpus and memory_mib")
        object.__setattr__(self, "ssh_keys", tuple(self.ssh_keys))
        object.__setattr__(self, "context", dict(self.context))


@dataclass(frozen=True)
class ProviderVM:
    """A VM as a provider reports it.

    ``site`` is the provider's name — a peer site or a public cloud — and is
    what listings show as the VM's site.  ``provider_id`` is the provider's
    own id (the site agent's VM id, the EC2 instance id); the broker keeps the
    mapping from its VM id.  ``addresses`` are what the provider reports and
    are data only: for public clouds in tests they are made up (moto's 54.x
    and 10.x) and nothing may ever connect to them.
    """

    site: str
    provider_id: str
    name: str
    state: VMState
    image: str | None = None
    instance_type: str | None = None
    vcpus: int | None = None
    memory_mib: int | None = None
    addresses: tuple[str, ...] = ()
    vm_id: str | None = None
    idempotency_key: str | None = None
    raw_state: str | None = None
    price_per_hour: float | None = None
    created_at: datetime | None = None


class ComputeProvider(abc.ABC):
    """Runs VMs at one place: a peer site or a public cloud.

    Semantics every implementation keeps (checked by the contract suite in
    ``tests/federation/test_federation_provider_contract.py``):

    * ``create_vm`` returns the VM in a transitional or running state.  Called
      again with the same ``idempotency_key`` (a retry after a timeout, a
      broker restart) it returns the same VM and makes nothing new.
    * A failed create leaves nothing behind: it raises ``SiteRefused`` (the
      provider said no: unknown image or size, no capacity, quota) or
      ``SiteFailed`` (unreachable, 5xx or throttled after retries), and any
      VM the provider may have started for it is removed.
    * ``get_vm`` raises ``VMNotFound`` for an id the provider does not know.
    * ``list_vms`` returns the VMs this provider runs for the federation that
      are not ``done`` (``failed`` ones stay visible until killed).
    * ``kill_vm`` destroys a VM at once (no graceful shutdown); killing a
      missing or already killed VM succeeds.  Afterwards the VM is not in
      ``list_vms``, and ``get_vm`` either raises ``VMNotFound`` or shows it
      ``done``.
    * Ids are the provider's; they never need translating by the caller
      except through the broker's own mapping.
    * Transient errors (connection errors, 5xx, throttling) are retried with
      backoff inside the provider; what escapes is final.
    """

    #: The provider's name: a site name or a public cloud name; shown as ``site``.
    name: str

    @abc.abstractmethod
    async def create_vm(self, request: VMCreateRequest) -> ProviderVM:
        """Create one VM (idempotent on ``request.idempotency_key``)."""

    @abc.abstractmethod
    async def get_vm(self, provider_id: str) -> ProviderVM:
        """The VM with this provider id; ``VMNotFound`` if there is none."""

    @abc.abstractmethod
    async def list_vms(self) -> list[ProviderVM]:
        """The provider's VMs that are not ``done``."""

    @abc.abstractmethod
    async def kill_vm(self, provider_id: str) -> None:
        """Destroy the VM; succeeds if it does not exist."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to close by default
        """Release what the provider holds (threads, sessions it created). Idempotent."""
