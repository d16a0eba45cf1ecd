"""Provisioning an admitted VM: ``pending -> prolog -> boot -> running``, or ``failed``.

``prolog`` fetches the image into the cache on its first use at this site
(one download for concurrent first uses), makes the VM's directory, its
copy-on-write root overlay and its ``cidata`` seed (hostname, SSH keys,
context, network-config, user data), and works out the domain with its
NIC and extra disks (``site_agent.vms.devices``). ``boot`` defines and
starts the domain on the host admission chose. Once it runs, the readiness
watcher takes over (``site_agent.vms.readiness``).

A create that fails, or is cancelled (a kill during provisioning, an agent
shutdown), leaves no domain and no files behind: :meth:`Provisioner.cleanup`
undefines the domain, removes the VM's directory and frees its lease and
disk attachments. The VM row stays, ``failed``, with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil

from core.vm_state import VmState
from site_agent.compute.driver import DiskSpec, DomainSpec
from site_agent.compute.errors import ComputeError
from site_agent.context.cidata import ContextSeed, write_cidata_iso
from site_agent.images.cache import ImageCache
from site_agent.images.catalog import ImageRef
from site_agent.images.errors import ImageError
from site_agent.storage.qemu_img import QemuImgError, create_overlay
from site_agent.vms.devices import VmDevices
from site_agent.vms.models import Vm
from site_agent.vms.readiness import Readiness
from site_agent.vms.runtime import VmRuntime

log = logging.getLogger(__name__)


def hostname_for(name: str) -> str:
    """An RFC 1123 host name derived from a VM name (``.`` and ``_`` become ``-``)."""
    label = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    return (label or "vm")[:63].rstrip("-") or "vm"


class Provisioner:
    """Turns admitted (``pending``) VMs into running domains, in the background."""

    def __init__(
        self, runtime: VmRuntime, images: ImageCache, devices: VmDevices, readiness: Readiness
    ) -> None:
        self.rt = runtime
        self.images = images
        self.devices = devices
        self.readiness = readiness

    def start(self, vm_id: str, image: ImageRef) -> None:
        """Provision ``vm_id`` in the background (a kill cancels it through the runtime)."""
        self.rt.spawn(self._provision(vm_id, image), self.rt.provisioning, vm_id)

    async def _provision(self, vm_id: str, image: ImageRef) -> None:
        """pending -> prolog -> boot -> running; on any failure: cleanup, then ``failed``."""
        vm = await self.rt.row(vm_id)
        assert vm.host_uri is not None
        driver = self.rt.hosts.driver(vm.host_uri)
        try:
            await self.rt.transition(
                vm_id, VmState.PROLOG, f"preparing disks and context on {vm.host_uri}"
            )
            spec = await self._prepare_files(vm, image)
            await self.rt.transition(vm_id, VmState.BOOT, "starting domain")
            await driver.start(spec)
            await self.rt.transition(
                vm_id, VmState.RUNNING, "domain running; waiting for guest readiness"
            )
            self.readiness.watch(vm_id, 0)
        except asyncio.CancelledError:
            await self.cleanup(vm_id, vm.host_uri)
            raise
        except (ComputeError, QemuImgError, ImageError, OSError, ValueError) as exc:
            await self.cleanup(vm_id, vm.host_uri)
            await self.rt.transition(vm_id, VmState.FAILED, f"create failed: {exc}")
        except Exception as exc:  # a bug: still fail cleanly, but log the traceback
            log.exception("unexpected error provisioning VM %s", vm_id)
            await self.cleanup(vm_id, vm.host_uri)
            await self.rt.transition(
                vm_id, VmState.FAILED, f"create failed: internal error ({type(exc).__name__})"
            )

    async def _prepare_files(self, vm: Vm, ref: ImageRef) -> DomainSpec:
        """The VM's directory, root overlay and seed; the domain spec that boots them."""
        # Downloads and verifies the image on its first use at this site
        # (one download for concurrent first uses); raises ImageError.
        image = await self.images.ensure_cached(ref.name)
        layout = self.rt.layout
        vm_dir = layout.vm_dir(vm.id)
        vm_dir.mkdir(mode=0o755)
        vm_dir.chmod(0o755)
        root = layout.root_disk(vm.id)
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
        await asyncio.to_thread(write_cidata_iso, seed, layout.cidata(vm.id))
        return DomainSpec(
            vm_id=vm.id,
            vcpus=vm.vcpus,
            memory_mib=vm.memory_mib,
            disks=(
                DiskSpec(path=root, target="vda", format="qcow2"),
                # vdb: the guest names virtio disks in PCI order, so extra disks keep their names.
                DiskSpec(path=layout.cidata(vm.id), target="vdb", format="raw", readonly=True),
                *devices.disks,
            ),
            nics=devices.nics,
            kernel=image.kernel,
            initrd=image.initrd,
            cmdline=image.cmdline,
            console_log=layout.console_log(vm.id),
        )

    async def cleanup(self, vm_id: str, host_uri: str) -> None:
        """Remove whatever a failed create made: the domain, the VM's files, lease and disks."""
        with contextlib.suppress(ComputeError):
            await self.rt.hosts.driver(host_uri).undefine(vm_id)
        await asyncio.to_thread(shutil.rmtree, self.rt.layout.vm_dir(vm_id), True)
        await self.devices.release(vm_id)
