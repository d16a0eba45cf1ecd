"""Persistent volumes and static disks: files, quotas, attachments.

* :mod:`.models` -- tables ``volumes`` and ``volume_attachments``, API shapes;
* :mod:`.files` -- the qcow2 files under ``state_dir/volumes/`` (ids only,
  never user paths);
* :mod:`.repository` -- SQL (synchronous; run in a thread);
* :mod:`.service` -- create/list/update/delete, quotas, and the attachment
  rules the VM lifecycle applies when it plugs disks into guests.

Exception tree (module :mod:`.errors`)::

    VolumeError
    ├── VolumeNotFound          (no such volume, or one the caller may not see)
    ├── VolumeForbidden         (visible but not the caller's to change or write)
    ├── VolumeQuotaExceeded     (the account's volume count or GiB limit)
    ├── VolumeInvalid           (a value the request may not have: size below the source...)
    ├── VolumeBusy              (attached, origin of copies, not ready, attached elsewhere)
    ├── NotAttached             (detach of a volume that is not attached there)
    └── VolumeFileError         (qemu-img failed on the volume's file)

:func:`.errors.http_error` maps them to ``core.errors`` at the service edge.
"""
