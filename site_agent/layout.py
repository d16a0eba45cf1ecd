"""Where the site agent keeps files under its ``state_dir``.

::

    state_dir/
      site.db                 SQLite database (unless database_url is set)
      instance-id             this installation's id, stamped on its hypervisor domains
      vms/<vm-id>/            root.qcow2 (overlay), cidata.iso, console.log
      quarantine/<vm-id>/     a killed VM's directory until its quarantine expires
      images/<image-id>/      a cached or saved image: disk.qcow2|disk.raw [, kernel, initrd]
      images/.partial/        downloads and saves in progress (renamed into place when verified)
      volumes/<volume-id>.qcow2  persistent volumes (docs/storage.md)

Directories are mode 0755 so that QEMU (running as ``libvirt-qemu``) can
reach the files libvirt hands it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StateLayout:
    root: Path

    @property
    def vms_dir(self) -> Path:
        return self.root / "vms"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    def vm_dir(self, vm_id: str) -> Path:
        return self.vms_dir / vm_id

    @property
    def volumes_dir(self) -> Path:
        return self.root / "volumes"

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def images_partial_dir(self) -> Path:
        return self.images_dir / ".partial"

    def image_dir(self, image_id: str) -> Path:
        return self.images_dir / image_id

    def root_disk(self, vm_id: str) -> Path:
        return self.vm_dir(vm_id) / "root.qcow2"

    def cidata(self, vm_id: str) -> Path:
        return self.vm_dir(vm_id) / "cidata.iso"

    def console_log(self, vm_id: str) -> Path:
        return self.vm_dir(vm_id) / "console.log"

    def instance_id(self) -> str:
        """This site installation's id, made on first use and kept in ``state_dir/instance-id``.

        Hypervisor domains are tagged with it, so two agents (or test runs)
        sharing one libvirtd never reconcile away each other's guests.
        """
        path = self.root / "instance-id"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            value = str(uuid.uuid4())
            path.write_text(value + "\n")
            return value

    def readable_console_log(self, vm_id: str) -> Path:
        """The console log of a live VM, or of a finished one while it is in quarantine."""
        live = self.console_log(vm_id)
        quarantined = self.quarantine_dir / vm_id / "console.log"
        return quarantined if not live.exists() and quarantined.exists() else live

    def prepare(self) -> None:
        """Create the directory tree (idempotent)."""
        for directory in (
            self.root,
            self.vms_dir,
            self.quarantine_dir,
            self.images_dir,
            self.images_partial_dir,
            self.volumes_dir,
        ):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o755)
