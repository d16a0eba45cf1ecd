"""VMs: the create body, list/show/stop/kill/console queries, the VM resource and its events.

A site agent takes :class:`VmCreate` as it is; the broker takes the same
fields plus placement and policy ones (``broker.vms.models.BrokerVmCreate``),
so both validate sizes, names, SSH keys, user data, context, pools, volumes
and static disks the same way.
"""

from __future__ import annotations

from datetime import datetime
from ipaddress import IPv4Address
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from core.guest_context import (
    CONTEXT_MAX_KEYS,
    CONTEXT_VALUE_MAX_BYTES,
    SSH_KEYS_MAX,
    USER_DATA_MAX_BYTES,
    validate_context,
    validate_ssh_key,
    validate_user_data,
)
from core.instance_types import DEFAULT_INSTANCE_TYPE, INSTANCE_TYPES
from core.resources.images import IMAGE_NAME_PATTERN, SaveAs
from core.resources.networks import POOL_NAME_PATTERN
from core.resources.volumes import UUID_PATTERN
from core.vm_state import VmState

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
HOST_TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:=-]{0,63}$"
MAX_MEMORY_MIB = 1024 * 1024  # 1 TiB: anything larger is certainly a typo
MAX_VCPUS = 256
MAX_EXTRA_DISKS = 16
VolumeId = Annotated[str, StringConstraints(pattern=UUID_PATTERN)]
ImageName = Annotated[str, StringConstraints(pattern=IMAGE_NAME_PATTERN)]
HostTag = Annotated[str, StringConstraints(pattern=HOST_TAG_PATTERN)]


class VmCreate(BaseModel):
    """Body of ``POST /vms``: size (``instance_type``, or ``vcpus`` + ``memory_mib``;
    default ``m1.small``), contextualisation, and the site resources to plug in.

    Unknown fields are refused, so a typo is never silently ignored.
    """

    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1, max_length=255)
    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    instance_type: str | None = None
    vcpus: int | None = Field(default=None, ge=1, le=MAX_VCPUS)
    memory_mib: int | None = Field(default=None, ge=64, le=MAX_MEMORY_MIB)
    count: int = Field(default=1, ge=1, le=100)
    ssh_keys: list[str] = Field(
        default_factory=list, max_length=SSH_KEYS_MAX, description="OpenSSH public key lines"
    )
    user_data: str | None = Field(
        default=None, description=f"at most {USER_DATA_MAX_BYTES} bytes of UTF-8 (16 KiB)"
    )
    context: dict[str, str] = Field(
        default_factory=dict,
        max_length=CONTEXT_MAX_KEYS,
        description="keys [A-Za-z_][A-Za-z0-9_]*; values one line, at most "
        f"{CONTEXT_VALUE_MAX_BYTES} bytes, no control characters",
    )
    host_tags: list[HostTag] = Field(
        default_factory=list, max_length=16, description="run on a host carrying these tags"
    )
    group: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="share with a group you belong to: its members may see and manage the VM",
    )
    network: str | None = Field(
        default=None,
        pattern=POOL_NAME_PATTERN,
        description="address pool (GET /networks); default: the site's first pool",
    )
    address: IPv4Address | None = Field(
        default=None, description="a free address of the pool (count 1 only)"
    )
    volumes: list[VolumeId] = Field(
        default_factory=list, max_length=8, description="volumes attached read-write (count 1)"
    )
    readonly_volumes: list[VolumeId] = Field(
        default_factory=list, max_length=8, description="volumes attached read-only"
    )
    static_disks: list[ImageName] = Field(
        default_factory=list, max_length=8, description="images attached read-only"
    )

    @field_validator("instance_type")
    @classmethod
    def _known_type(cls, value: str | None) -> str | None:
        if value is not None and value not in INSTANCE_TYPES:
            known = ", ".join(INSTANCE_TYPES)
            raise ValueError(f"unknown instance type {value!r}; known: {known}")
        return value

    # The same rules the site applies when it writes the guest's seed (core.guest_context).
    @field_validator("ssh_keys")
    @classmethod
    def _ssh_keys(cls, keys: list[str]) -> list[str]:
        return [validate_ssh_key(key) for key in keys]

    @field_validator("context")
    @classmethod
    def _context(cls, context: dict[str, str]) -> dict[str, str]:
        return validate_context(context)

    @field_validator("user_data")
    @classmethod
    def _user_data(cls, value: str | None) -> str | None:
        return validate_user_data(value)

    @model_validator(mode="after")
    def _sizing(self) -> Self:
        if self.instance_type is not None and (
            self.vcpus is not None or self.memory_mib is not None
        ):
            raise ValueError("give either instance_type or vcpus/memory_mib, not both")
        if (self.vcpus is None) != (self.memory_mib is None):
            raise ValueError("vcpus and memory_mib go together")
        return self

    @model_validator(mode="after")
    def _devices(self) -> Self:
        if self.address is not None and self.count > 1:
            raise ValueError("address needs count 1: every VM gets its own address")
        if self.volumes and self.count > 1:
            raise ValueError(
                "volumes need count 1: a volume is attached read-write to one VM only "
                "(readonly_volumes can be shared)"
            )
        every = [*self.volumes, *self.readonly_volumes]
        if len(set(every)) != len(every):
            raise ValueError("a volume is listed more than once in volumes/readonly_volumes")
        if len(set(self.static_disks)) != len(self.static_disks):
            raise ValueError("a static disk is listed more than once")
        if len(every) + len(self.static_disks) > MAX_EXTRA_DISKS:
            raise ValueError(f"at most {MAX_EXTRA_DISKS} volumes and static disks per VM")
        return self

    def sizing(self) -> tuple[str | None, int, int]:
        """``(instance_type, vcpus, memory_mib)``; an explicit size has no instance type."""
        if self.vcpus is not None and self.memory_mib is not None:
            return None, self.vcpus, self.memory_mib
        itype = INSTANCE_TYPES[self.instance_type or DEFAULT_INSTANCE_TYPE]
        return itype.name, itype.vcpus, itype.memory_mib


class VmListQuery(BaseModel):
    """Query of ``GET /vms``."""

    model_config = ConfigDict(extra="forbid")
    all: bool = Field(default=False, description="admins: list every owner's VMs")
    include_done: bool = Field(default=True, description="include finished VMs")


class VmShowQuery(BaseModel):
    """Query of ``GET /vms/{id}``: optionally hold the answer until a state is reached."""

    model_config = ConfigDict(extra="forbid")
    wait: Literal["running", "ready"] | None = Field(
        default=None, description="wait until the VM is running (or ready), or terminal"
    )
    timeout: float = Field(default=60.0, gt=0, le=600)


class StopRequest(BaseModel):
    """Optional body of ``POST /vms/{id}/stop``."""

    model_config = ConfigDict(extra="forbid")
    save: SaveAs | None = Field(
        default=None, description="once the guest is off, keep its root disk as this new image"
    )


class KillQuery(BaseModel):
    """Query of ``DELETE /vms/{id}``."""

    model_config = ConfigDict(extra="forbid")
    force: bool = Field(default=False, description="kill even if a save as image is pending")


class ConsoleQuery(BaseModel):
    """Query of ``GET /vms/{id}/console``."""

    model_config = ConfigDict(extra="forbid")
    tail: int = Field(default=65536, ge=1, le=4 * 1024 * 1024, description="bytes from the end")


class VmPublic(BaseModel):
    """A VM as the API shows it."""

    id: str
    name: str
    owner: str
    group: str | None = None
    image: str
    vcpus: int
    memory_mib: int
    instance_type: str | None = None
    state: VmState
    state_reason: str | None = None
    host: str | None = None
    ready: bool = False
    ip: str | None = Field(default=None, description="the address the guest reported when ready")
    network: str | None = Field(default=None, description="the pool of the VM's lease")
    address: str | None = Field(default=None, description="the leased address")
    mac: str | None = None
    via: str | None = Field(
        default=None, description="the broker that created it for its owner (null: directly)"
    )
    created_at: datetime
    updated_at: datetime


class VmList(BaseModel):
    vms: list[VmPublic]


class VmEventPublic(BaseModel):
    """One line of a VM's event log: a state change or a notable fact, with its reason."""

    at: datetime
    from_state: VmState | None
    to_state: VmState | None
    reason: str


class VmEventList(BaseModel):
    vm_id: str
    events: list[VmEventPublic]


class ConsoleOutput(BaseModel):
    vm_id: str
    output: str
    truncated: bool
