"""The in-memory state behind :class:`~federation.providers.fake.FakeProvider`.

One :class:`FakeWorld` is shared by a fake provider and every view of it
acting for a user, as one site's database is shared by all its users. It
holds VMs, volumes, images and address pools, and answers like a site
agent: the same shapes (:mod:`core.resources`) and the same refusals (status
and code) for the same mistakes, so code tested against the fake meets no
surprise at a real site. Nothing runs: a VM is a record, ``running`` and
``ready`` as soon as it is made.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network

from core.resources.images import ImagePublic, ImageSource, ImageState
from core.resources.networks import LeasePublic, NetworkDetail, NetworkPublic, NetworkType
from core.resources.vms import VmEventPublic
from core.resources.volumes import AttachmentPublic, VmDisk, VolumePublic, VolumeState
from core.vm_state import VmState
from federation.errors import ProviderError
from federation.providers.base import ProviderVM

#: Owner of what the federation itself (no user) makes at the fake.
FEDERATION = "federation"
#: The ``host`` of every fake VM (the fake has one simulated host).
FAKE_HOST = "fake-host"


def now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def digest(body: object) -> str:
    """A stable hash of a request body (what an idempotency key is bound to)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def image(
    name: str,
    *,
    owner: str | None = None,
    public: bool = True,
    source: ImageSource = ImageSource.CONFIG,
    state: ImageState = ImageState.READY,
    url: str | None = None,
    size: int | None = None,
    sha1: str | None = None,
    sha256: str | None = None,
    description: str = "",
    origin_vm: str | None = None,
    base_image: str | None = None,
) -> ImagePublic:
    """An image resource as a site shows it."""
    return ImagePublic(
        name=name,
        owner=owner,
        public=public,
        source=source,
        format="qcow2",
        state=state,
        state_reason=None,
        available=state is not ImageState.FAILED,
        direct_kernel_boot=False,
        url=url,
        size=size,
        sha1=sha1,
        sha256=sha256,
        kernel=None,
        initrd=None,
        cmdline=None,
        description=description,
        cached_bytes=None,
        origin_vm=origin_vm,
        base_image=base_image,
        created_at=now(),
        cached_at=None,
        last_used_at=None,
    )


@dataclass
class FakePool:
    """An address pool: every host address of ``cidr`` but the first (the gateway)."""

    name: str
    type: NetworkType
    cidr: IPv4Network
    default: bool
    leases: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # addr -> vm, mac, owner

    @property
    def gateway(self) -> str:
        return str(next(self.cidr.hosts()))

    def addresses(self) -> list[str]:
        return [str(a) for a in self.cidr.hosts()][1:]

    def free(self) -> list[str]:
        return [a for a in self.addresses() if a not in self.leases]

    def public(self) -> NetworkPublic:
        size = len(self.addresses())
        return NetworkPublic(
            name=self.name,
            type=self.type,
            cidr=str(self.cidr),
            gateway=self.gateway,
            dns=[],
            default=self.default,
            size=size,
            leased=len(self.leases),
            free=size - len(self.leases),
        )

    def detail(self, owner: str | None) -> NetworkDetail:
        leases = [
            LeasePublic(address=a, mac=mac, vm_id=vm, owner=who, created_at=now())
            for a, (vm, mac, who) in sorted(self.leases.items())
            if owner is None or who == owner
        ]
        addresses = self.addresses()
        return NetworkDetail(
            **self.public().model_dump(),
            range_start=addresses[0],
            range_end=addresses[-1],
            fixed=[],
            leases=leases,
        )

    def contains(self, address: IPv4Address) -> bool:
        return address in self.cidr and str(address) in self.addresses()


@dataclass
class FakeVm:
    """One VM record (mutable; turned into a ``ProviderVM`` on every read)."""

    id: str
    name: str
    owner: str
    group: str | None
    image: str
    instance_type: str | None
    vcpus: int
    memory_mib: int
    vm_id: str
    idempotency_key: str
    network: str | None = None
    address: str | None = None
    mac: str | None = None
    state: VmState = VmState.PENDING
    state_reason: str | None = None
    ready: bool = False
    created_at: datetime = field(default_factory=now)
    events: list[VmEventPublic] = field(default_factory=list)
    disks: dict[str, VmDisk] = field(default_factory=dict)
    console: str = ""

    def move(self, to: VmState, reason: str) -> None:
        """Change state and record the event (as the site's event log does)."""
        self.events.append(
            VmEventPublic(at=now(), from_state=self.state, to_state=to, reason=reason)
        )
        self.state = to
        self.state_reason = reason

    def view(self, site: str) -> ProviderVM:
        """The VM as the contract shows it (``site``: the provider's name)."""
        return ProviderVM(
            site=site,
            provider_id=self.id,
            name=self.name,
            state=self.state,
            state_reason=self.state_reason,
            ready=self.ready,
            image=self.image,
            instance_type=self.instance_type,
            vcpus=self.vcpus,
            memory_mib=self.memory_mib,
            addresses=(self.address,) if self.address else (),
            vm_id=self.vm_id,
            idempotency_key=self.idempotency_key,
            raw_state=self.state.value,
            created_at=self.created_at,
            extra={
                "host": FAKE_HOST,
                "network": self.network,
                "address": self.address,
                "mac": self.mac,
                "owner": self.owner,
                "group": self.group,
                "simulated": True,
            },
        )

    def next_device(self) -> str:
        used = set(self.disks)
        for letter in "bcdefghijklmnopqrstuvwxyz":
            if f"vd{letter}" not in used:
                return f"vd{letter}"
        raise RuntimeError("no free device name")


@dataclass
class FakeVolume:
    id: str
    owner: str
    tag: str
    visibility: str
    size_gib: int
    origin: str
    cow_of: str | None
    image: str | None
    created_at: datetime = field(default_factory=now)
    updated_at: datetime = field(default_factory=now)
    attachments: dict[str, AttachmentPublic] = field(default_factory=dict)  # vm id -> attachment

    def public(self, viewer: str | None, vms: dict[str, FakeVm]) -> VolumePublic:
        """The volume as ``viewer`` sees it (attachments: the viewer's VMs only)."""
        mine = [
            a for a in self.attachments.values() if viewer is None or vms[a.vm_id].owner == viewer
        ]
        return VolumePublic(
            id=self.id,
            owner=self.owner,
            tag=self.tag,
            visibility=self.visibility,
            size_gib=self.size_gib,
            format="qcow2",
            state=VolumeState.READY,
            state_reason=None,
            origin=self.origin,
            cow_of=self.cow_of,
            image=self.image,
            attached=len(self.attachments),
            attachments=mine,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


class FakeWorld:
    """Everything one fake provider holds, shared by its views (see the module docstring).

    ``name``: the provider's name (the ``site`` of its errors); ``images``:
    image names VMs can boot (None: any name); ``max_vms``: active VMs beyond
    which creates are refused; ``networks``: ``(name, type, cidr)``
    pools, the first one the default; ``host_tags``: the tags of the fake's
    one host.
    """

    def __init__(
        self,
        name: str,
        *,
        images: Iterable[str] | None,
        max_vms: int | None,
        networks: Iterable[tuple[str, NetworkType | str, str]],
        host_tags: Iterable[str],
    ) -> None:
        self.name = name
        self.any_image = images is None
        self.images: dict[str, ImagePublic] = {name: image(name) for name in images or ()}
        self.max_vms = max_vms
        self.pools: dict[str, FakePool] = {}
        for index, (name, kind, cidr) in enumerate(networks):
            self.pools[name] = FakePool(name, NetworkType(kind), IPv4Network(cidr), index == 0)
        self.host_tags = frozenset(host_tags)
        self.vms: dict[str, FakeVm] = {}
        self.vm_keys: dict[tuple[str, str], tuple[str, str]] = {}  # (owner, key) -> (digest, id)
        self.volumes: dict[str, FakeVolume] = {}
        self.volume_keys: dict[tuple[str, str], tuple[str, str]] = {}
        self.failures: list[ProviderError] = []
        self.calls: Counter[str] = Counter()

    def call(self, method: str) -> None:
        """Count a call; raise the next error given to ``fail_next``, if any."""
        self.calls[method] += 1
        if self.failures:
            raise self.failures.pop(0)

    def active_vms(self) -> int:
        return sum(1 for vm in self.vms.values() if vm.state.is_active)

    def image_in_use(self, name: str) -> bool:
        in_vms = any(
            vm.state.is_active
            and (vm.image == name or any(d.image == name for d in vm.disks.values()))
            for vm in self.vms.values()
        )
        return in_vms or any(v.image == name for v in self.volumes.values())

    def release(self, vm: FakeVm) -> None:
        """Free what a VM that is gone held: its address lease and its attachments."""
        if vm.network is not None and vm.address is not None:
            self.pools[vm.network].leases.pop(vm.address, None)
        for disk in vm.disks.values():
            if disk.volume_id is not None and disk.volume_id in self.volumes:
                self.volumes[disk.volume_id].attachments.pop(vm.id, None)
        vm.disks.clear()
