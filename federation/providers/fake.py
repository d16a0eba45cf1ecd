"""An in-memory :class:`ComputeProvider` with the same semantics as the real ones.

Used by the contract suite, by broker tests and for demos.  It can refuse
(unknown image, capacity limit) and can be told to fail the next calls
(:meth:`FakeProvider.fail_next`), so failover and retry paths can be driven
without a network.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime

from federation.errors import ProviderError, SiteFailed, SiteRefused, VMNotFound
from federation.providers.base import ComputeProvider, ProviderVM, VMCreateRequest, VMState


class FakeProvider(ComputeProvider):
    """VMs in a dict.  New VMs are ``running`` at once.

    ``images``: images it can run (None = any).  ``max_vms``: refuses beyond
    this many active VMs (None = no limit).  ``calls`` counts calls per method.
    """

    def __init__(
        self,
        name: str = "fake",
        *,
        images: Iterable[str] | None = None,
        max_vms: int | None = None,
    ) -> None:
        self.name = name
        self.images = None if images is None else frozenset(images)
        self.max_vms = max_vms
        self._vms: dict[str, ProviderVM] = {}
        self._by_key: dict[str, str] = {}
        self._ids = itertools.count(1)
        self._failures: list[ProviderError] = []
        self.calls: dict[str, int] = {"create_vm": 0, "get_vm": 0, "list_vms": 0, "kill_vm": 0}

    def fail_next(self, *errors: ProviderError) -> None:
        """Make the next calls (any method) raise these errors, one per call."""
        self._failures.extend(errors)

    def _call(self, method: str) -> None:
        self.calls[method] += 1
        if self._failures:
            raise self._failures.pop(0)

    async def create_vm(self, request: VMCreateRequest) -> ProviderVM:
        self._call("create_vm")
        known = self._by_key.get(request.idempotency_key)
        if known is not None and self._vms[known].state.is_active:
            return self._vms[known]
        if self.images is not None and request.image not in self.images:
            raise SiteRefused(self.name, f"image {request.image} is not available")
        active = sum(1 for vm in self._vms.values() if vm.state.is_active)
        if self.max_vms is not None and active >= self.max_vms:
            raise SiteRefused(self.name, "no capacity left")
        provider_id = f"{self.name}-{next(self._ids)}"
        vm = ProviderVM(
            site=self.name,
            provider_id=provider_id,
            name=request.name,
            state=VMState.RUNNING,
            image=request.image,
            instance_type=request.instance_type,
            vcpus=request.vcpus,
            memory_mib=request.memory_mib,
            vm_id=request.vm_id,
            idempotency_key=request.idempotency_key,
            raw_state="running",
            created_at=datetime.now(UTC),
        )
        self._vms[provider_id] = vm
        self._by_key[request.idempotency_key] = provider_id
        return vm

    async def get_vm(self, provider_id: str) -> ProviderVM:
        self._call("get_vm")
        vm = self._vms.get(provider_id)
        if vm is None:
            raise VMNotFound(self.name, f"no VM {provider_id}")
        return vm

    async def list_vms(self) -> list[ProviderVM]:
        self._call("list_vms")
        return [vm for vm in self._vms.values() if vm.state is not VMState.DONE]

    async def kill_vm(self, provider_id: str) -> None:
        self._call("kill_vm")
        vm = self._vms.get(provider_id)
        if vm is not None:
            self._vms[provider_id] = replace(vm, state=VMState.DONE, raw_state="done")

    def fail_with(self, reason: str) -> SiteFailed:
        """A ``SiteFailed`` for this provider (sugar for :meth:`fail_next`)."""
        return SiteFailed(self.name, reason)
