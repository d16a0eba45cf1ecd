"""The one interface the broker uses to run things somewhere: :class:`ComputeProvider`.

Every place the broker can run a VM (a peer Stratus site, a public cloud, or
the in-memory fake) implements this one contract; the broker never asks
which kind it holds. Four operations are required (create, show, list,
kill); the others are optional, and a provider declares the ones it offers
in :attr:`ComputeProvider.operations`. An optional operation a provider does
not offer raises :class:`~federation.errors.OperationNotSupported` (the
default implementation here), which the broker reports as a clear 409.

Value objects: :class:`VMCreateRequest` (what to create, with its
idempotency key), :class:`ProviderVM` (a VM as the provider reports it, with
provider-specific fields in ``extra``). States are the shared
:class:`core.vm_state.VmState`; each implementation maps its backend's state
names through an explicit table (``SITE_STATE_MAP``, ``CLOUD_STATE_MAP``).
Resources other than VMs (volumes, disks, networks, images, console, events)
use the shapes of :mod:`core.resources`, as the site API serves them.

Acting for a user: :meth:`ComputeProvider.acting_for` returns the provider as
it acts on behalf of one authenticated user. A provider that knows users
(``knows_users``: a peer site) then creates, shows and lists as that user, and
the site records and authorises the real person; one that does not (a public
cloud: everything runs under the federation's credentials) returns itself,
and the broker's own records keep users apart.

Errors (tree in :mod:`federation.errors`): ``SiteRefused`` (the provider
answered no; its HTTP status and code are kept), ``SiteFailed`` (broken or
unreachable after retries), ``ProviderNotFound`` (no such id there),
``OperationNotSupported``. Implementations translate every third-party
exception into these at their edge with ``raise ... from exc``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from auth.delegation import DelegatedUser
from core.resources.images import ImageDeleted, ImagePublic, ImageRegister, SaveAs
from core.resources.networks import NetworkDetail, NetworkPublic
from core.resources.vms import ConsoleOutput, VmCreate, VmEventPublic
from core.resources.volumes import (
    DiskAttach,
    VmDisk,
    VolumeAttach,
    VolumeCreate,
    VolumeDetach,
    VolumeListQuery,
    VolumePublic,
    VolumeUpdate,
)
from core.vm_state import VmState
from federation.errors import OperationNotSupported

WaitFor = Literal["running", "ready"]


class Operation(StrEnum):
    """The optional operations of the contract (the four VM basics are always there)."""

    STOP = "stop"  # stop_vm (optionally saving the root disk as an image)
    REBOOT = "reboot"  # reboot_vm
    WAIT = "wait"  # wait_vm: hold the answer until running/ready
    CONSOLE = "console"  # console
    EVENTS = "events"  # events
    DISKS = "disks"  # vm_disks, attach_disk, detach_disk
    VOLUMES = "volumes"  # create/get/list/update/delete/attach/detach volumes
    NETWORKS = "networks"  # list_networks, get_network
    IMAGES = "images"  # list_images, get_image, register_image, delete_image


@dataclass(frozen=True)
class VMCreateRequest:
    """One VM to create.

    ``vm_id`` is the broker's id for the VM (providers tag the VM with it);
    ``idempotency_key`` makes a retried create return the VM made by the
    first try instead of making a second one. ``spec`` is the create body a
    site takes (``count`` is always 1 here); a provider refuses
    (``SiteRefused``) the parts it cannot honour, e.g. a public cloud asked
    for a Stratus volume or address pool.
    """

    vm_id: str
    idempotency_key: str
    spec: VmCreate

    def __post_init__(self) -> None:
        if not self.vm_id or not self.idempotency_key:
            raise ValueError("vm_id and idempotency_key are required")
        if self.spec.count != 1:
            raise ValueError("a provider creates one VM per request (spec.count must be 1)")

    @property
    def image(self) -> str:
        return self.spec.image

    @property
    def name(self) -> str:
        return self.spec.name or self.vm_id


@dataclass(frozen=True)
class ProviderVM:
    """A VM as a provider reports it.

    ``site`` is the provider's name (a peer site or a public cloud): what
    listings show as the VM's site. ``provider_id`` is the provider's own id
    (the site agent's VM id, the EC2 instance id). ``addresses`` are data
    only: a public cloud's addresses in tests are made up (moto's 54.x and
    10.x) and nothing may ever connect to them. ``extra`` holds what only
    this kind of provider knows (a site's ``host``, ``network``,
    ``address``, ``mac``; a cloud's raw node data); callers may show it but
    never branch on it.
    """

    site: str
    provider_id: str
    name: str
    state: VmState
    state_reason: str | None = None
    ready: bool = False
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
    extra: Mapping[str, Any] = field(default_factory=dict)


class ComputeProvider(abc.ABC):
    """Runs VMs (and, optionally, volumes, networks, images) at one place.

    Semantics every implementation keeps (checked by the contract suite in
    ``tests/federation/test_federation_provider_contract.py``, which runs the
    peer site, the public cloud and the fake):

    * ``create_vm`` returns the VM in a transitional or running state. Called
      again with the same ``idempotency_key`` (a retry after a timeout, a
      broker restart) it returns the same VM and makes nothing new.
    * A failed create leaves nothing behind: it raises ``SiteRefused`` (the
      provider said no: unknown image or size, no capacity, quota) or
      ``SiteFailed`` (unreachable, 5xx or throttled after retries), and any
      VM the provider may have started for it is removed.
    * ``get_vm`` raises ``ProviderNotFound`` for an id the provider does not know.
    * ``list_vms`` returns the VMs this provider runs for the federation
      (for the user it acts for, when it knows users); with
      ``include_done=False`` the ``done`` ones are left out (``failed`` ones
      stay until killed).
    * ``kill_vm`` destroys a VM at once (no graceful shutdown) and returns it
      as it is afterwards, or None when the provider no longer knows it.
      Killing a missing or already killed VM succeeds. Afterwards the VM is
      not among ``list_vms(include_done=False)``.
    * An optional operation the provider does not list in ``operations``
      raises ``OperationNotSupported`` and changes nothing.
    * Ids are the provider's; the broker keeps the mapping from its own ids.
    * Transient errors (connection errors, 5xx, throttling) are retried with
      backoff inside the provider when the operation is idempotent; what
      escapes is final.
    """

    #: The provider's name: a site name or a public cloud name; shown as ``site``.
    name: str
    #: ``"site"`` or ``"cloud"``: shown to users; never a reason to branch.
    kind: str = "site"
    #: The optional operations this provider offers.
    operations: frozenset[Operation] = frozenset()
    #: True when :meth:`acting_for` makes the provider act as that user (it knows users).
    knows_users: bool = False
    #: True when the provider's VMs run nothing (the fake, a site on simulated hosts).
    simulated: bool = False

    def acting_for(self, user: DelegatedUser | None) -> ComputeProvider:
        """This provider as it acts for ``user`` (None: as the federation itself).

        The default (providers that do not know users) is the provider itself.
        """
        return self

    def supports(self, operation: Operation) -> bool:
        return operation in self.operations

    def _unsupported(self, operation: Operation) -> OperationNotSupported:
        return OperationNotSupported(self.name, operation.value)

    # --- required -----------------------------------------------------------------

    @abc.abstractmethod
    async def create_vm(self, request: VMCreateRequest) -> ProviderVM:
        """Create one VM (idempotent on ``request.idempotency_key``)."""

    @abc.abstractmethod
    async def get_vm(self, provider_id: str) -> ProviderVM:
        """The VM with this provider id; ``ProviderNotFound`` if there is none."""

    @abc.abstractmethod
    async def list_vms(self, *, include_done: bool = False) -> list[ProviderVM]:
        """The provider's VMs (see the class docstring for which)."""

    @abc.abstractmethod
    async def kill_vm(self, provider_id: str, *, force: bool = False) -> ProviderVM | None:
        """Destroy the VM now; the VM afterwards, or None if the provider has none.

        ``force`` also drops a save as image in progress (refused otherwise).
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to close by default
        """Release what the provider holds (threads, sessions it created). Idempotent."""

    # --- optional: VM operations -----------------------------------------------------

    async def stop_vm(self, provider_id: str, *, save: SaveAs | None = None) -> ProviderVM:
        """Clean shutdown; with ``save`` the root disk becomes a new image once off."""
        raise self._unsupported(Operation.STOP)

    async def reboot_vm(self, provider_id: str) -> ProviderVM:
        """Restart the VM (readiness is awaited again from the new boot)."""
        raise self._unsupported(Operation.REBOOT)

    async def wait_vm(self, provider_id: str, until: WaitFor, timeout: float) -> ProviderVM:
        """The VM once it is ``until`` (or terminal), or as it is after ``timeout`` seconds."""
        raise self._unsupported(Operation.WAIT)

    async def console(self, provider_id: str, *, tail: int) -> ConsoleOutput:
        """The last ``tail`` bytes of the VM's serial console."""
        raise self._unsupported(Operation.CONSOLE)

    async def events(self, provider_id: str) -> list[VmEventPublic]:
        """The provider's event log of the VM, oldest first."""
        raise self._unsupported(Operation.EVENTS)

    async def vm_disks(self, provider_id: str) -> list[VmDisk]:
        """The volumes and static disks plugged into the VM."""
        raise self._unsupported(Operation.DISKS)

    async def attach_disk(self, provider_id: str, disk: DiskAttach) -> VmDisk:
        """Hot-plug a volume or a static disk (provider ids) into a running VM."""
        raise self._unsupported(Operation.DISKS)

    async def detach_disk(self, provider_id: str, device: str) -> VmDisk:
        """Hot-unplug the disk at guest ``device`` from a running VM."""
        raise self._unsupported(Operation.DISKS)

    # --- optional: volumes ---------------------------------------------------------

    async def create_volume(self, body: VolumeCreate, *, idempotency_key: str) -> VolumePublic:
        """Create a volume (idempotent on ``idempotency_key``; ``cow_of`` is a provider id)."""
        raise self._unsupported(Operation.VOLUMES)

    async def get_volume(
        self, volume_id: str, *, wait: Literal["ready"] | None = None, timeout: float = 0.0
    ) -> VolumePublic:
        """One volume; with ``wait`` until it is ready (or failed) or ``timeout`` passes."""
        raise self._unsupported(Operation.VOLUMES)

    async def list_volumes(self, query: VolumeListQuery) -> list[VolumePublic]:
        raise self._unsupported(Operation.VOLUMES)

    async def update_volume(self, volume_id: str, changes: VolumeUpdate) -> VolumePublic:
        raise self._unsupported(Operation.VOLUMES)

    async def delete_volume(self, volume_id: str) -> None:
        """Delete a volume; deleting a missing one succeeds."""
        raise self._unsupported(Operation.VOLUMES)

    async def attach_volume(self, volume_id: str, body: VolumeAttach) -> VmDisk:
        raise self._unsupported(Operation.VOLUMES)

    async def detach_volume(self, volume_id: str, body: VolumeDetach) -> VmDisk:
        raise self._unsupported(Operation.VOLUMES)

    # --- optional: networks and images ---------------------------------------------

    async def list_networks(self) -> list[NetworkPublic]:
        raise self._unsupported(Operation.NETWORKS)

    async def get_network(self, name: str) -> NetworkDetail:
        raise self._unsupported(Operation.NETWORKS)

    async def list_images(self) -> list[ImagePublic]:
        raise self._unsupported(Operation.IMAGES)

    async def get_image(self, name: str) -> ImagePublic:
        raise self._unsupported(Operation.IMAGES)

    async def register_image(self, body: ImageRegister) -> ImagePublic:
        raise self._unsupported(Operation.IMAGES)

    async def delete_image(self, name: str) -> ImageDeleted:
        raise self._unsupported(Operation.IMAGES)
