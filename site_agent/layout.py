"""Where the site agent keeps files under its ``state_dir``.

::

    state_dir/
      site.db                 SQLite database (unless database_url is set)
      vms/<vm-id>/            root.qcow2 (overlay), cidata.iso, console.log
      quarantine/<vm-id>/     a killed VM's directory until its quarantine expires

Directories are mode 0755 so that QEMU (running as ``libvirt-qemu``) can
reach the files libvirt hands it.
"""

from __future__ import annotations

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

    def root_disk(self, vm_id: str) -> Path:
        return self.vm_dir(vm_id) / "root.qcow2"

    def cidata(self, vm_id: str) -> Path:
        return self.vm_dir(vm_id) / "cidata.iso"

    def console_log(self, vm_id: str) -> Path:
        return self.vm_dir(vm_id) / "console.log"

    def prepare(self) -> None:
        """Create the directory tree (idempotent)."""
        for directory in (self.root, self.vms_dir, self.quarantine_dir):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o755)
