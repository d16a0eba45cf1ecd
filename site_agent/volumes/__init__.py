"""Persistent volumes and static disks: files, quotas, attachments.

* :mod:`.models` -- tables ``volumes`` and ``volume_attachments``;
* :mod:`.files` -- the qcow2 files under ``state_dir/volumes/`` (ids only,
  never user paths);
* :mod:`.repository` -- SQL (synchronous; run in a thread);
* :mod:`.service` -- create/list/show/update/delete and quotas;
* :mod:`.attachments` -- the rules for plugging volumes and static disks
  into VMs, and the attachment rows the VM lifecycle stores and boots with.

Errors (:mod:`.errors`) are part of the site agent's tree, drawn with their
HTTP answers in :mod:`site_agent.errors`.
"""
