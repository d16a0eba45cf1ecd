"""Images a site can boot VMs from: the image cache (docs/images.md).

:class:`~site_agent.images.cache.ImageCache` is the facade; one module per
job behind it: ``catalog`` (boot files, config-file images), ``registry``
(register, list, show, delete, check), ``fetcher`` (first-use download with
verification), ``eviction`` (what is in use, LRU eviction), ``saving``
(save a VM's root disk as an image), ``sources`` (URL policy, verified
streaming fetch), ``models`` and ``repository`` (the ``images`` table).

Errors (``site_agent.images.errors``) are part of the site agent's tree,
drawn with their HTTP answers in :mod:`site_agent.errors`.
"""
