"""The body of ``POST /vms`` that the site agent and the broker share.

Each service extends :class:`VmRequestBase` with its own fields (a site adds
pools, volumes and host tags; the broker adds placement and policy fields),
so both validate sizes, names, SSH keys, user data and context the same way.
"""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.instance_types import DEFAULT_INSTANCE_TYPE, INSTANCE_TYPES

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
CONTEXT_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_USER_DATA = 16 * 1024
MAX_MEMORY_MIB = 1024 * 1024  # 1 TiB: anything larger is certainly a typo
MAX_VCPUS = 256


class VmRequestBase(BaseModel):
    """Either ``instance_type`` or ``vcpus`` + ``memory_mib`` (default: ``m1.small``).

    Unknown fields are refused, so a typo is never silently ignored.
    """

    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1, max_length=255)
    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    instance_type: str | None = None
    vcpus: int | None = Field(default=None, ge=1, le=MAX_VCPUS)
    memory_mib: int | None = Field(default=None, ge=64, le=MAX_MEMORY_MIB)
    count: int = Field(default=1, ge=1, le=100)
    ssh_keys: list[str] = Field(default_factory=list, max_length=32)
    user_data: str | None = Field(default=None, max_length=MAX_USER_DATA)
    context: dict[str, str] = Field(default_factory=dict, max_length=64)

    @field_validator("instance_type")
    @classmethod
    def _known_type(cls, value: str | None) -> str | None:
        if value is not None and value not in INSTANCE_TYPES:
            known = ", ".join(INSTANCE_TYPES)
            raise ValueError(f"unknown instance type {value!r}; known: {known}")
        return value

    @field_validator("ssh_keys")
    @classmethod
    def _ssh_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if "\n" in key or "\r" in key or not key.startswith(("ssh-", "ecdsa-", "sk-")):
                raise ValueError("each SSH key must be one line in OpenSSH public key format")
            if len(key) > 8192:
                raise ValueError("SSH key longer than 8192 characters")
        return keys

    @field_validator("context")
    @classmethod
    def _context(cls, context: dict[str, str]) -> dict[str, str]:
        for key, value in context.items():
            if not CONTEXT_KEY.match(key):
                raise ValueError(f"context key {key!r} must match [A-Za-z_][A-Za-z0-9_]*")
            if len(value) > 4096 or "\x00" in value or "\n" in value:
                raise ValueError(
                    f"context value for {key!r} must be one line of at most 4096 chars"
                )
        return context

    @model_validator(mode="after")
    def _sizing(self) -> Self:
        if self.instance_type is not None and (
            self.vcpus is not None or self.memory_mib is not None
        ):
            raise ValueError("give either instance_type or vcpus/memory_mib, not both")
        if (self.vcpus is None) != (self.memory_mib is None):
            raise ValueError("vcpus and memory_mib go together")
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
