"""Images a site can boot VMs from: the image cache (docs/images.md).

Modules: ``cache`` (:class:`~site_agent.images.cache.ImageCache`: register,
first-use download with verification, LRU eviction, save as image),
``sources`` (URL policy, verified streaming fetch), ``catalog`` (boot files,
config-file images), ``models`` and ``repository`` (the ``images`` table).

Exception tree (module ``site_agent.images.errors``)::

    ImageError
    ├── ImageNotFound         no such image, or not visible to the caller
    ├── ImageNameTaken        the name is used by another image
    ├── ImageInUse            a non-terminal VM or a volume uses it (delete refused)
    ├── ImageBusy             downloading or being saved (delete refused)
    ├── ImageConfigured       from the site config file (the API cannot delete it)
    ├── ImageNotUsable        failed, still being saved, or files missing
    ├── ImageForbidden        file:// URLs and public images are for site admins
    ├── SourceRefused         bad URL, unsupported scheme, no such local file
    ├── ImageTooLarge         larger than [image_cache] max_bytes
    ├── FetchFailed           source unreachable, HTTP error, unreadable file
    │   └── VerificationFailed
    │       ├── SizeMismatch      short, or longer than registered (cut off early)
    │       ├── ChecksumMismatch  SHA-1 / SHA-256 differ
    │       └── BadImageFormat    not the declared format, backing or data file
    ├── CacheFull             no room even after evicting every unused image
    └── SaveFailed            turning a VM's root disk into an image failed
"""
