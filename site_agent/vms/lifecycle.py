"""The VM lifecycle: create, provision, stop, kill, reboot, watch readiness, reconcile.

Every state change goes through :meth:`VmManager._transition`, which checks
the state machine (``site_agent.vms.states``) and writes the event log.
Blocking work (database, libvirt through the driver, ISO writing) runs in
threads or subprocesses; handlers only await.

Guarantees:

* a create that fails leaves no domain and no files behind (the VM row
  stays, in ``failed``, with the reason);
* a kill always frees the host: the domain is destroyed and undefined, the
  VM's files go to quarantine;
* after an agent restart :meth:`reconcile` makes the database and the
  hypervisors agree (see its docstring);
* a stop that asked to save the root disk as an image is never silently
  dropped: a kill is refused while the save is pending (unless forced, which
  the event log records), and a stop interrupted by an agent restart still
  saves the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from auth.principal import Principal
from core.errors import Conflict, Forbidden, NotFound, Unavailable, ValidationFailed
from core.idempotency import key_reused, request_hash
from site_agent.compute.driver import DiskSpec, DomainSpec, DomainState
from site_agent.compute.errors import ComputeError, NoHostAvailable
from site_agent.compute.hosts import choose_host
from site_agent.config import VmPolicy
from site_agent.context.cidata import ContextSeed, write_cidata_iso
from site_agent.host_pool import HostPool
from site_agent.images.cache import ImageCache
from site_agent.images.catalog import ImageRef
from site_agent.images.errors import ImageError, ImageNameTaken, ImageNotFound, ImageNotUsable
from site_agent.images.models import SaveAs
from site_agent.layout import StateLayout
from site_agent.networks.service import NetworkService
from site_agent.quarantine import Quarantine
from site_agent.storage.qemu_img import QemuImgError, create_overlay
from site_agent.vms.console import log_size, wait_for_ready
from site_agent.vms.devices import VmDevices
from site_agent.vms.models import IdempotencyRecord, Vm, VmCreate, VmEvent
from site_agent.vms.repository import IdempotencyConflict, VmRepository
from site_agent.vms.states import VmState
from site_agent.volumes.models import VmDisk
from site_agent.volumes.service import VolumeService

log = logging.getLogger(__name__)

_GONE = frozenset({DomainState.SHUTOFF, DomainState.MISSING, DomainState.CRASHED})


def hostname_for(name: str) -> str:
    """An RFC 1123 host name derived from a VM name (``.`` and ``_`` become ``-``)."""
    label = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    return (label or "vm")[:63].rstrip("-") or "vm"


class VmManager:
    """Owns every VM of the site and the background tasks that drive them."""

    def __init__(
        self,
        repo: VmRepository,
        hosts: HostPool,
        images: ImageCache,
        layout: StateLayout,
        quarantine: Quarantine,
        policy: VmPolicy,
        *,
        networks: NetworkService | None = None,
        volumes: VolumeService | None = None,
    ) -> None:
        self.repo = repo
        self.hosts = hosts
        self.images = images
        self.layout = layout
        self.quarantine = quarantine
        self.policy = policy
        self._placement_lock = asyncio.Lock()
        self._locks: dict[str, asyncio.Lock] = {}
        self._provisioning: dict[str, asyncio.Task[None]] = {}
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Condition()
        # NICs, leases, volumes and static disks of VMs (site_agent/vms/devices.py).
        self.devices = VmDevices.build(
            repo.engine,
            layout,
            networks,
            volumes,
            check_image=self._resolve_image,
            image_files=images.ensure_cached,
        )

    # ----- helpers -------------------------------------------------------

    def _lock(self, vm_id: str) -> asyncio.Lock:
        return self._locks.setdefault(vm_id, asyncio.Lock())

    def _spawn(
        self,
        coro: Coroutine[Any, Any, Any],
        registry: dict[str, Any] | None = None,
        key: str | None = None,
    ) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        if registry is not None and key is not None:
            registry[key] = task
            task.add_done_callback(
                lambda _t: registry.pop(key, None) if registry.get(key) is _t else None
            )
        return task

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def _transition(self, vm_id: str, target: VmState, reason: str, **fields: Any) -> Vm:
        vm: Vm = await self._db(self.repo.transition, vm_id, target, reason, **fields)
        log.info("VM %s -> %s: %s", vm_id, target, reason)
        await self._notify()
        return vm

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def get_for(self, principal: Principal, vm_id: str) -> Vm:
        """The VM if the caller may see it; ``NotFound`` otherwise (existence is not leaked)."""
        vm: Vm | None = await self._db(self.repo.get, vm_id)
        if vm is None or not principal.can_access(vm.owner, vm.group):
            raise NotFound(f"no VM with id {vm_id!r}")
        return vm

    async def list_for(
        self, principal: Principal, *, every_owner: bool, include_done: bool
    ) -> list[Vm]:
        """The caller's VMs and those shared with the caller's groups; with ``every_owner``
        an admin gets everyone's."""
        if every_owner and principal.is_admin:
            rows: list[Vm] = await self._db(self.repo.list_vms, None, include_terminal=include_done)
        else:
            rows = await self._db(
                self.repo.list_vms,
                principal.account,
                include_terminal=include_done,
                groups=sorted(principal.groups),
            )
        return rows

    async def events_for(self, principal: Principal, vm_id: str) -> list[VmEvent]:
        """The event log of a VM the caller may see, oldest first."""
        vm = await self.get_for(principal, vm_id)
        events: list[VmEvent] = await self._db(self.repo.events, vm.id)
        return events

    # ----- create --------------------------------------------------------

    async def create(
        self, principal: Principal, request: VmCreate, idempotency_key: str | None
    ) -> list[Vm]:
        """Accept a create: place each VM on a host, store it ``pending``, start provisioning.

        With an ``idempotency_key`` a repeated request returns the VMs made the
        first time and makes nothing new.
        """
        body = request.model_dump(mode="json")
        digest = request_hash(body)
        if idempotency_key is not None:
            earlier = await self._find_idempotent(principal, idempotency_key, digest)
            if earlier is not None:
                return earlier
        if request.count > self.policy.max_count_per_request:
            raise ValidationFailed(
                f"count {request.count} is above this site's limit of "
                f"{self.policy.max_count_per_request}"
            )
        if (
            request.group is not None
            and request.group not in principal.groups
            and not principal.is_admin
        ):
            raise Forbidden(f"you are not a member of group {request.group!r}")
        image = await self._resolve_image(principal, request.image)
        await self.devices.check_request(principal, request)
        instance_type, vcpus, memory = request.sizing()
        base_name = request.name or f"vm-{uuid.uuid4().hex[:8]}"
        async with self._placement_lock:
            usage = await self.usage()
            loads = self.hosts.loads(usage)
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
                    raise Conflict(
                        f"no host can take a VM of {vcpus} vCPU / {memory} MiB"
                        + (f" (tags {sorted(request.host_tags)})" if request.host_tags else ""),
                        code="no_capacity",
                        details={"hosts": exc.reasons},
                    ) from exc
                # Count this VM before placing the next one of the same request.
                loads[loads.index(host)] = dataclasses.replace(
                    host,
                    used_cpus=host.used_cpus + vcpus,
                    used_memory_mib=host.used_memory_mib + memory,
                    running_vms=host.running_vms + 1,
                )
                name = base_name if request.count == 1 else f"{base_name}-{index}"
                vms.append(
                    Vm(
                        id=str(uuid.uuid4()),
                        owner=principal.account,
                        group=request.group,
                        name=name,
                        image=image.name,
                        vcpus=vcpus,
                        memory_mib=memory,
                        instance_type=instance_type,
                        host_uri=host.uri,
                        ssh_keys=list(request.ssh_keys),
                        context=dict(request.context),
                        user_data=request.user_data,
                    )
                )
            record = None
            if idempotency_key is not None:
                record = IdempotencyRecord(
                    owner=principal.account,
                    key=idempotency_key,
                    request_hash=digest,
                    vm_ids=[vm.id for vm in vms],
                )
            async with self.devices.volumes.lock:
                # Leases and disk attachments, stored with the VMs (nothing if this fails).
                extra = await self.devices.plan(principal, request, vms)
                stored = await self._db(
                    self.repo.insert, vms, "create request accepted", record, extra
                )
        if not stored:
            # A concurrent request with the same key won the race: answer with its VMs.
            assert idempotency_key is not None
            earlier = await self._find_idempotent(principal, idempotency_key, digest)
            return earlier or []
        for vm in vms:
            self._spawn(self._provision(vm.id, image), self._provisioning, vm.id)
        return vms

    async def _find_idempotent(
        self, principal: Principal, key: str, digest: str
    ) -> list[Vm] | None:
        try:
            result: list[Vm] | None = await self._db(
                self.repo.find_idempotent, principal.account, key, digest
            )
        except IdempotencyConflict as exc:
            raise key_reused(key) from exc
        return result

    async def _resolve_image(self, principal: Principal, name: str) -> ImageRef:
        """Check that ``principal`` may boot ``name`` now; nothing is downloaded here.

        Unknown (or not visible) -> 422; ``failed``, being saved or missing
        files -> 409 ``image_unavailable``. The download, if any, happens in
        ``prolog`` (:meth:`_prepare_files`).
        """
        try:
            return await self.images.lookup(principal, name)
        except ImageNotFound as exc:
            raise ValidationFailed(
                f"unknown image {name!r}",
                details=[{"field": "image", "problem": "no such image at this site"}],
            ) from exc
        except ImageNotUsable as exc:
            raise Conflict(str(exc), code="image_unavailable") from exc

    async def usage(self) -> dict[str, tuple[int, int, int]]:
        """Per host URI: ``(vcpus, memory_mib, vm_count)`` held by non-terminal VMs."""
        usage: dict[str, tuple[int, int, int]] = {}
        for vm in await self._db(self.repo.active_on_hosts):
            if vm.host_uri is None:
                continue
            cpus, mem, count = usage.get(vm.host_uri, (0, 0, 0))
            usage[vm.host_uri] = (cpus + vm.vcpus, mem + vm.memory_mib, count + 1)
        return usage

    # ----- provisioning --------------------------------------------------

    async def _provision(self, vm_id: str, image: ImageRef) -> None:
        """pending -> prolog -> boot -> running; on any failure: cleanup, then ``failed``."""
        vm: Vm = await self._db(self.repo.get, vm_id)
        assert vm.host_uri is not None
        driver = self.hosts.driver(vm.host_uri)
        try:
            await self._transition(
                vm_id, VmState.PROLOG, f"preparing disks and context on {vm.host_uri}"
            )
            spec = await self._prepare_files(vm, image)
            await self._transition(vm_id, VmState.BOOT, "starting domain")
            await driver.start(spec)
            await self._transition(
                vm_id, VmState.RUNNING, "domain running; waiting for guest readiness"
            )
            self._start_watcher(vm_id, 0)
        except asyncio.CancelledError:
            await self._cleanup_failed_create(vm_id, vm.host_uri)
            raise
        except (ComputeError, QemuImgError, ImageError, OSError, ValueError) as exc:
            await self._cleanup_failed_create(vm_id, vm.host_uri)
            await self._transition(vm_id, VmState.FAILED, f"create failed: {exc}")
        except Exception as exc:  # a bug: still fail cleanly, but log the traceback
            log.exception("unexpected error provisioning VM %s", vm_id)
            await self._cleanup_failed_create(vm_id, vm.host_uri)
            await self._transition(
                vm_id, VmState.FAILED, f"create failed: internal error ({type(exc).__name__})"
            )

    async def _prepare_files(self, vm: Vm, ref: ImageRef) -> DomainSpec:
        # Downloads and verifies the image on its first use at this site
        # (one download for concurrent first uses); raises ImageError.
        image = await self.images.ensure_cached(ref.name)
        vm_dir = self.layout.vm_dir(vm.id)
        vm_dir.mkdir(mode=0o755)
        vm_dir.chmod(0o755)
        root = self.layout.root_disk(vm.id)
        await create_overlay(image.disk, image.format, root)
        devices = await self.devices.boot(vm.id)
        seed = ContextSeed(
            instance_id=vm.id,
            hostname=hostname_for(vm.name),
            ssh_keys=tuple(vm.ssh_keys),
            context=dict(vm.context),
            network=devices.network,
            user_data=vm.user_data,
        )
        await asyncio.to_thread(write_cidata_iso, seed, self.layout.cidata(vm.id))
        return DomainSpec(
            vm_id=vm.id,
            vcpus=vm.vcpus,
            memory_mib=vm.memory_mib,
            disks=(
                DiskSpec(path=root, target="vda", format="qcow2"),
                # vdb: the guest names virtio disks in PCI order, so extra disks keep their names.
                DiskSpec(path=self.layout.cidata(vm.id), target="vdb", format="raw", readonly=True),
                *devices.disks,
            ),
            nics=devices.nics,
            kernel=image.kernel,
            initrd=image.initrd,
            cmdline=image.cmdline,
            console_log=self.layout.console_log(vm.id),
        )

    async def _cleanup_failed_create(self, vm_id: str, host_uri: str) -> None:
        """Remove whatever a failed create made: the domain and the VM's files."""
        with contextlib.suppress(ComputeError):
            await self.hosts.driver(host_uri).undefine(vm_id)
        await asyncio.to_thread(shutil.rmtree, self.layout.vm_dir(vm_id), True)
        await self.devices.release(vm_id)

    # ----- readiness -----------------------------------------------------

    def _start_watcher(self, vm_id: str, offset: int) -> None:
        old = self._watchers.get(vm_id)
        if old is not None:
            old.cancel()
        self._spawn(self._watch_ready(vm_id, offset), self._watchers, vm_id)

    async def _watch_ready(self, vm_id: str, offset: int) -> None:
        timeout = self.policy.ready_timeout_seconds
        found = await wait_for_ready(
            self.layout.console_log(vm_id), vm_id, offset=offset, timeout=timeout
        )
        if found is None:
            await self._db(
                self.repo.add_event,
                vm_id,
                f"no readiness line on the console within {timeout:.0f} s",
            )
            return
        ip = f" with address {found.ip}" if found.ip else " (no address)"
        await self._db(self.repo.update, vm_id, f"guest ready{ip}", ready=True, ip=found.ip)
        await self._notify()

    def _stop_watcher(self, vm_id: str) -> None:
        task = self._watchers.pop(vm_id, None)
        if task is not None:
            task.cancel()

    # ----- operations ----------------------------------------------------

    async def stop(self, principal: Principal, vm_id: str, save: SaveAs | None = None) -> Vm:
        """Clean shutdown (ACPI power button) in the background; destroy after the timeout.

        With ``save``, the name is reserved now (409 ``image_exists`` if
        taken, and nothing is stopped) and, once the guest is off, the root
        disk becomes that image, owned by the caller (:meth:`_save_root`).
        Until then the save is pending: :meth:`kill` refuses to drop it
        unless forced.
        """
        async with self._lock(vm_id):
            vm = await self.get_for(principal, vm_id)
            if vm.state != VmState.RUNNING:
                raise Conflict(
                    f"VM {vm_id} is {vm.state}; only a running VM can be stopped",
                    code="invalid_state",
                )
            reason = "stop requested: ACPI shutdown sent"
            if save is not None:
                try:
                    await self.images.reserve_save(principal.account, save, vm_id, vm.image)
                except ImageNameTaken as exc:
                    raise Conflict(
                        f"an image named {save.name!r} already exists at this site",
                        code="image_exists",
                    ) from exc
                reason += f"; the root disk will be saved as image {save.name!r}"
            try:
                vm = await self._transition(vm_id, VmState.SHUTDOWN, reason)
            except BaseException:
                if save is not None:
                    await self.images.drop_save(vm_id, "save dropped: the stop failed")
                raise
        self._spawn(self._finish_stop(vm_id), self._stopping, vm_id)
        return vm

    async def _finish_stop(self, vm_id: str) -> None:
        async with self._lock(vm_id):
            vm: Vm = await self._db(self.repo.get, vm_id)
            assert vm.host_uri is not None
            driver = self.hosts.driver(vm.host_uri)
            self._stop_watcher(vm_id)
            clean = False
            try:
                await driver.shutdown(vm_id)
                clean = await self._wait_gone(vm_id, vm.host_uri, self.policy.stop_timeout_seconds)
                if not clean:
                    await self._db(
                        self.repo.add_event,
                        vm_id,
                        f"guest did not power off within {self.policy.stop_timeout_seconds:.0f} s;"
                        " destroying it",
                    )
                how = "guest powered off cleanly" if clean else "destroyed after stop timeout"
            except ComputeError as exc:
                how = f"shutdown failed ({exc}); destroyed"
            how = await self._save_root(vm, clean, how)
            await self._release(vm, how)

    async def _save_root(self, vm: Vm, clean: bool, how: str) -> str:
        """Save ``vm``'s root disk as the image its stop asked for, if any: ``how`` + outcome.

        The domain is destroyed first (nothing to do once the guest is off),
        so the disk is not in use. The start and the result of the save go to
        the event log. A failed save marks the image ``failed``; the stop
        still completes.
        """
        name = await self.images.pending_save(vm.id)
        if name is None:
            return how
        assert vm.host_uri is not None
        note = "" if clean else "; guest powered off by force: file systems may need a check"
        try:
            await self.hosts.driver(vm.host_uri).destroy(vm.id)
        except ComputeError as exc:
            reason = f"save failed: the VM could not be powered off: {exc}"
            await self.images.drop_save(vm.id, reason)
            await self._db(self.repo.add_event, vm.id, f"save as image {name!r} failed: {reason}")
            return how + f"; save as image {name!r} failed"
        await self._db(self.repo.add_event, vm.id, f"saving the root disk as image {name!r}")
        try:
            image = await self.images.complete_save(vm.id, self.layout.root_disk(vm.id), note)
        except ImageError as exc:
            await self._db(self.repo.add_event, vm.id, f"save as image {name!r} failed: {exc}")
            return how + f"; save as image {name!r} failed"
        await self._db(
            self.repo.add_event,
            vm.id,
            f"root disk saved as image {name!r}: {image.size} bytes, sha256 {image.sha256}{note}",
        )
        return how + f"; root disk saved as image {name!r}"

    async def _wait_gone(self, vm_id: str, host_uri: str, timeout: float) -> bool:
        driver = self.hosts.driver(host_uri)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if await driver.state(vm_id) in _GONE:
                return True
            await asyncio.sleep(0.25)
        return False

    async def kill(self, principal: Principal, vm_id: str, *, force: bool = False) -> Vm:
        """Destroy the VM now and free everything; its files go to quarantine. Idempotent.

        A VM whose root disk is waiting to be saved as an image (a stop with
        ``save``) is not killed: ``409 save_pending`` names the image. With
        ``force`` the save is dropped (the image is marked ``failed``) and
        the event log says so, then the VM is killed.
        """
        vm = await self.get_for(principal, vm_id)
        pending = await self.images.pending_save(vm_id)
        if pending is not None:
            if not force:
                raise Conflict(
                    f"VM {vm_id} is stopping to save its root disk as image {pending!r};"
                    " wait for the stop to finish, or kill with force=true to drop the save",
                    code="save_pending",
                    details={"image": pending},
                )
            stopping = self._stopping.get(vm_id)
            if stopping is not None:
                stopping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stopping
            dropped = await self.images.drop_save(
                vm_id, f"save dropped: VM {vm_id} was killed (force=true) before it was saved"
            )
            if dropped is not None:
                await self._db(
                    self.repo.add_event,
                    vm_id,
                    f"kill with force=true: the pending save as image {dropped!r} was dropped",
                )
        task = self._provisioning.get(vm_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with self._lock(vm_id):
            vm = await self._db(self.repo.get, vm_id)
            if vm.state == VmState.DONE:
                return vm
            if vm.state not in (VmState.FAILED, VmState.SHUTDOWN):
                vm = await self._transition(vm_id, VmState.SHUTDOWN, "kill requested")
            return await self._release(vm, "killed")

    async def _release(self, vm: Vm, how: str) -> Vm:
        """Destroy and undefine the domain, quarantine the files, mark ``done``."""
        self._stop_watcher(vm.id)
        if vm.host_uri is not None:
            driver = self.hosts.driver(vm.host_uri)
            try:
                await driver.destroy(vm.id)
                await driver.undefine(vm.id)
            except ComputeError as exc:
                # The VM stays in ``shutdown``; a retried kill or the monitor finishes it.
                await self._db(self.repo.add_event, vm.id, f"hypervisor error while freeing: {exc}")
                raise Unavailable(
                    f"hypervisor error on {vm.host_uri}: {exc}; retry the kill",
                    code="hypervisor_error",
                ) from exc
        expires = await self._db(self.quarantine.put, vm.id, vm.owner)
        note = f"; disks quarantined until {expires:%Y-%m-%d %H:%M:%S} UTC" if expires else ""
        freed = await self.devices.release(vm.id)
        note += f"; {freed}" if freed else ""
        return await self._transition(vm.id, VmState.DONE, how + note, ready=False)

    async def reboot(self, principal: Principal, vm_id: str) -> Vm:
        """Hard reset of a running VM; readiness is awaited again from the new boot."""
        async with self._lock(vm_id):
            vm = await self.get_for(principal, vm_id)
            if vm.state != VmState.RUNNING:
                raise Conflict(
                    f"VM {vm_id} is {vm.state}; only a running VM can be rebooted",
                    code="invalid_state",
                )
            assert vm.host_uri is not None
            offset = log_size(self.layout.console_log(vm_id))
            await self.hosts.driver(vm.host_uri).reboot(vm_id)
            vm = await self._db(
                self.repo.update,
                vm_id,
                "rebooted (hard reset)",
                ready=False,
                boot_log_offset=offset,
            )
            self._start_watcher(vm_id, offset)
            await self._notify()
            return vm

    # ----- disks (hot-plug) ---------------------------------------------------

    async def _running(self, principal: Principal, vm_id: str, what: str) -> Vm:
        vm = await self.get_for(principal, vm_id)
        if vm.state != VmState.RUNNING:
            raise Conflict(
                f"VM {vm_id} is {vm.state}; disks are {what} only while it runs",
                code="invalid_state",
            )
        assert vm.host_uri is not None
        return vm

    async def disks_for(self, principal: Principal, vm_id: str) -> list[VmDisk]:
        """The volumes and static disks plugged into a VM the caller may see."""
        vm = await self.get_for(principal, vm_id)
        return [self.devices.volumes.vm_disk(a) for a in await self.devices.attachments(vm.id)]

    async def attach_disk(
        self,
        principal: Principal,
        vm_id: str,
        *,
        volume_id: str | None = None,
        image: str | None = None,
        readonly: bool = False,
    ) -> VmDisk:
        """Hot-plug a volume, or the static disk ``image`` (read-only), into a running VM.

        Foreign VMs are ``404``; rules on volumes in ``site_agent.volumes.service``.
        """
        async with self._lock(vm_id):
            vm = await self._running(principal, vm_id, "attached")
            assert vm.host_uri is not None
            row = await self.devices.attach(
                principal,
                vm,
                self.hosts.driver(vm.host_uri),
                volume_id=volume_id,
                image=image,
                readonly=readonly or image is not None,
            )
            what = f"volume {volume_id}" if volume_id else f"static disk {image}"
            mode = "read-only" if row.readonly else "read-write"
            await self._db(self.repo.add_event, vm_id, f"{what} attached at {row.device} ({mode})")
            return self.devices.volumes.vm_disk(row)

    async def detach_disk(
        self,
        principal: Principal,
        vm_id: str,
        *,
        device: str | None = None,
        volume_id: str | None = None,
    ) -> VmDisk:
        """Hot-unplug the disk at ``device`` (or the volume ``volume_id``) from a running VM.

        ``409 not_attached`` if no such disk is attached to it.
        """
        async with self._lock(vm_id):
            vm = await self._running(principal, vm_id, "detached")
            assert vm.host_uri is not None
            current = await self.devices.attachments(vm_id)
            row = self.devices.find(current, device=device, volume_id=volume_id)
            await self.devices.detach(vm, self.hosts.driver(vm.host_uri), row)
            what = f"volume {row.volume_id}" if row.volume_id else f"static disk {row.image}"
            await self._db(self.repo.add_event, vm_id, f"{what} detached from {row.device}")
            return self.devices.volumes.vm_disk(row)

    async def detach_volume(
        self, principal: Principal, volume_id: str, vm_id: str | None = None
    ) -> VmDisk:
        """Detach a volume from ``vm_id``, or from the one VM of the caller that has it.

        ``409 not_attached`` if it is attached to none of the caller's VMs;
        ``422`` if it is attached to several and ``vm_id`` is not given.
        """
        await self.devices.volume_for(principal, volume_id)
        if vm_id is None:
            candidates = []
            for row in await self.devices.volume_attachments(volume_id):
                with contextlib.suppress(NotFound):
                    candidates.append((await self.get_for(principal, row.vm_id)).id)
            if len(candidates) > 1:
                raise ValidationFailed(
                    f"volume {volume_id} is attached to {len(candidates)} of your VMs; "
                    "say which with vm_id"
                )
            if not candidates:
                raise Conflict(
                    f"volume {volume_id} is not attached to any of your VMs", code="not_attached"
                )
            vm_id = candidates[0]
        return await self.detach_disk(principal, vm_id, volume_id=volume_id)

    async def wait_for(
        self, principal: Principal, vm_id: str, condition: str, timeout: float
    ) -> Vm:
        """Wait until the VM is ``running``/``ready``/terminal or ``timeout`` passes; returns it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            vm = await self.get_for(principal, vm_id)
            state = VmState(vm.state)
            if (
                state.is_terminal
                or (condition == "running" and state == VmState.RUNNING)
                or (condition == "ready" and vm.ready)
            ):
                return vm
            remaining = deadline - loop.time()
            if remaining <= 0:
                return vm
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 1.0))

    # ----- reconciliation -------------------------------------------------

    async def reconcile(self) -> list[str]:
        """Make the database and the hypervisors agree; returns what was done (also logged).

        * a Stratus domain with no VM row (or a row already finished) is destroyed,
          undefined, and its files quarantined: nothing stays orphaned;
        * a row in ``boot``/``running`` whose domain runs is (again) ``running``,
          and its readiness is watched if not seen yet;
        * a row whose domain vanished or stopped is finished: ``failed`` if it
          vanished, ``done`` if the guest powered off, files quarantined;
        * a row caught in ``pending``/``prolog`` is failed and its files removed;
        * a row in ``shutdown`` has its stop completed.

        VMs with an operation in progress in this process are left alone.
        """
        actions: list[str] = []
        busy = (
            set(self._provisioning)
            | set(self._stopping)
            | {k for k, lock in self._locks.items() if lock.locked()}
        )
        rows: list[Vm] = await self._db(self.repo.list_vms, None)
        by_id = {vm.id: vm for vm in rows}
        for uri, host in self.hosts.hosts.items():
            if host.info is None:
                continue
            try:
                domains = await host.driver.list_domains()
            except ComputeError as exc:
                log.error("reconcile: cannot list domains on %s: %s", uri, exc)
                continue
            for vm_id, dstate in domains.items():
                vm = by_id.get(vm_id)
                if vm is not None and VmState(vm.state).holds_resources and vm.host_uri == uri:
                    continue
                if vm_id in busy:
                    continue
                await host.driver.destroy(vm_id)
                await host.driver.undefine(vm_id)
                owner = vm.owner if vm is not None else "unknown"
                await self._db(self.quarantine.put, vm_id, owner)
                actions.append(
                    f"orphan domain {vm_id} on {uri} ({dstate}) destroyed; files quarantined"
                )
            for vm in rows:
                if vm.host_uri != uri or vm.id in busy or not VmState(vm.state).holds_resources:
                    continue
                actions.extend(
                    await self._reconcile_row(vm, domains.get(vm.id, DomainState.MISSING))
                )
        actions.extend(await self._reconcile_saves())
        await self.devices.release_finished()
        for action in actions:
            log.warning("reconcile: %s", action)
        return actions

    async def _reconcile_saves(self) -> list[str]:
        """Fail pending saves whose VM is no longer stopping (they can never complete)."""
        actions = []
        for vm_id, name in (await self.images.pending_saves()).items():
            if vm_id in self._stopping or self._lock(vm_id).locked():
                continue
            vm: Vm | None = await self._db(self.repo.get, vm_id)
            if vm is not None and vm.state == VmState.SHUTDOWN:
                continue
            reason = "save dropped: the VM ended before its root disk was saved"
            if await self.images.drop_save(vm_id, reason) is not None:
                if vm is not None:
                    await self._db(self.repo.add_event, vm_id, f"save as image {name!r}: {reason}")
                actions.append(f"pending save of VM {vm_id} as image {name!r} failed: VM ended")
        return actions

    async def _reconcile_row(self, vm: Vm, dstate: DomainState) -> list[str]:
        state = VmState(vm.state)
        if state in (VmState.PENDING, VmState.PROLOG) or (
            state == VmState.BOOT and dstate in _GONE
        ):
            assert vm.host_uri is not None
            await self._cleanup_failed_create(vm.id, vm.host_uri)
            await self._transition(
                vm.id, VmState.FAILED, "agent restarted while the VM was being created"
            )
            return [f"VM {vm.id} was being created when the agent stopped: failed, files removed"]
        if state == VmState.SHUTDOWN:
            # A save as image asked by the interrupted stop is done now, not dropped.
            how = await self._save_root(
                vm, dstate == DomainState.SHUTOFF, "stop completed after agent restart"
            )
            await self._release(vm, how)
            return [f"VM {vm.id} was shutting down: finished"]
        if dstate == DomainState.RUNNING:
            if state == VmState.BOOT:
                await self._transition(
                    vm.id, VmState.RUNNING, "domain found running after agent restart"
                )
            if not vm.ready and vm.id not in self._watchers:
                self._start_watcher(vm.id, vm.boot_log_offset)
            return [] if state == VmState.RUNNING else [f"VM {vm.id} found running"]
        if dstate in (DomainState.PAUSED, DomainState.SHUTTING_DOWN):
            return []
        reason = {
            DomainState.MISSING: "domain vanished from the hypervisor",
            DomainState.CRASHED: "guest crashed",
            DomainState.SHUTOFF: "guest powered itself off",
        }[dstate]
        await self._transition(vm.id, VmState.SHUTDOWN, reason)
        if dstate == DomainState.MISSING:
            vm = await self._db(self.repo.get, vm.id)
            self._stop_watcher(vm.id)
            await self._db(self.quarantine.put, vm.id, vm.owner)
            await self.devices.release(vm.id)
            await self._transition(vm.id, VmState.FAILED, reason + "; files quarantined")
        else:
            await self._release(vm, reason)
        return [f"VM {vm.id}: {reason}"]

    async def run_monitor(self, interval: float) -> None:
        """Reconcile every ``interval`` seconds (guests that power off, vanished domains)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reconcile()
            except Exception:
                log.exception("periodic reconcile failed; will retry")

    async def close(self) -> None:
        """Cancel background tasks (VM state stays as recorded; reconcile fixes it on restart)."""
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
