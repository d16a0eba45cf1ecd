"""Admission of a create request: validate, choose a host, reserve, store; answer at once.

Admission never waits for another request's provisioning: it checks the
request (count limit, group, image, network, volumes), places each VM on a
host under the placement lock (so two creates never take the same capacity,
address or volume), stores the VMs ``pending`` with their leases and disk
attachments in one transaction, and hands them to provisioning
(``site_agent.vms.provisioning``) in the background. A request refused at
any step stores nothing.

``Idempotency-Key`` (``core.idempotency``, scope ``"vms"``): a create
repeated with the same key by the same account returns the VMs the first
one made and makes nothing; the same key with another body is ``409
idempotency_key_reused``. Two concurrent first requests with one key make
the VMs once: the loser's insert fails on the key's unique constraint and
it answers with the winner's VMs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

from auth.principal import Principal
from core.idempotency import request_hash
from core.resources.vms import VmCreate
from site_agent.compute.errors import NoHostAvailable
from site_agent.compute.hosts import choose_host
from site_agent.errors import InvalidRequest
from site_agent.images.cache import ImageCache
from site_agent.owners import owner_fields
from site_agent.vms.devices import VmDevices
from site_agent.vms.errors import NoCapacity, VmForbidden
from site_agent.vms.models import Vm
from site_agent.vms.provisioning import Provisioner
from site_agent.vms.runtime import VmRuntime


class Admission:
    """Accepts create requests (see the module docstring)."""

    def __init__(
        self,
        runtime: VmRuntime,
        images: ImageCache,
        devices: VmDevices,
        provisioner: Provisioner,
    ) -> None:
        self.rt = runtime
        self.images = images
        self.devices = devices
        self.provisioner = provisioner
        self._placement_lock = asyncio.Lock()

    async def create(
        self, principal: Principal, request: VmCreate, idempotency_key: str | None
    ) -> list[Vm]:
        """Accept a create: place each VM on a host, store it ``pending``, start provisioning.

        Raises ``InvalidRequest`` (422: count above the site's limit, unknown
        image, pool or volume), ``VmForbidden`` (a group the caller is not
        in), ``NoCapacity`` (no host fits), ``ImageNotUsable``, and the pool
        and volume errors of the devices; nothing is stored then.
        """
        digest = request_hash(request.model_dump(mode="json"))
        if idempotency_key is not None:
            earlier = await self._earlier(principal, idempotency_key, digest)
            if earlier is not None:
                return earlier
        policy = self.rt.policy
        if request.count > policy.max_count_per_request:
            raise InvalidRequest(
                f"count {request.count} is above this site's limit of "
                f"{policy.max_count_per_request}"
            )
        if (
            request.group is not None
            and request.group not in principal.groups
            and not principal.is_admin
        ):
            raise VmForbidden(f"you are not a member of group {request.group!r}")
        image = await self.images.check_usable(principal, request.image)
        await self.devices.check_request(principal, request)
        async with self._placement_lock:
            vms = await self._place(principal, request, image.name)
            async with self.devices.volume_lock:
                # Leases and disk attachments, stored with the VMs (nothing if this fails).
                extra = await self.devices.plan(principal, request, vms)
                stored = await self.rt.db(
                    self.rt.repo.insert,
                    vms,
                    "create request accepted",
                    extra,
                    key=idempotency_key,
                    digest=digest,
                )
        if not stored:
            # A concurrent request with the same key won the race: answer with its VMs.
            assert idempotency_key is not None
            return await self._earlier(principal, idempotency_key, digest) or []
        for vm in vms:
            self.provisioner.start(vm.id, image)
        return vms

    async def _place(self, principal: Principal, request: VmCreate, image: str) -> list[Vm]:
        """The new VM rows (unsaved), each on the best host; call under the placement lock."""
        instance_type, vcpus, memory = request.sizing()
        base_name = request.name or f"vm-{uuid.uuid4().hex[:8]}"
        loads = self.rt.hosts.loads(await self.rt.usage())
        owner = owner_fields(principal)
        vms: list[Vm] = []
        for index in range(request.count):
            try:
                host = choose_host(
                    loads,
                    vcpus=vcpus,
                    memory_mib=memory,
                    required_tags=frozenset(request.host_tags),
                )
            except NoHostAvailable as exc:
                tags = f" (tags {sorted(request.host_tags)})" if request.host_tags else ""
                raise NoCapacity(
                    f"no host can take a VM of {vcpus} vCPU / {memory} MiB{tags}", exc.reasons
                ) from exc
            # Count this VM before placing the next one of the same request.
            loads[loads.index(host)] = dataclasses.replace(
                host,
                used_cpus=host.used_cpus + vcpus,
                used_memory_mib=host.used_memory_mib + memory,
                running_vms=host.running_vms + 1,
            )
            vms.append(
                Vm(
                    id=str(uuid.uuid4()),
                    **owner,
                    group=request.group,
                    name=base_name if request.count == 1 else f"{base_name}-{index}",
                    image=image,
                    vcpus=vcpus,
                    memory_mib=memory,
                    instance_type=instance_type,
                    host_uri=host.uri,
                    ssh_keys=list(request.ssh_keys),
                    context=dict(request.context),
                    user_data=request.user_data,
                )
            )
        return vms

    async def _earlier(self, principal: Principal, key: str, digest: str) -> list[Vm] | None:
        """The VMs made under ``key``; ``IdempotencyKeyReused`` if it came with another body."""
        return await self.rt.db(self.rt.repo.find_idempotent, principal.account, key, digest)
