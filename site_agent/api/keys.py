"""Typed application keys for the site agent's shared resources."""

from __future__ import annotations

import httpx
from aiohttp import web
from sqlalchemy.engine import Engine

from site_agent.config import SiteConfig
from site_agent.host_pool import HostPool
from site_agent.images.cache import ImageCache
from site_agent.layout import StateLayout
from site_agent.networks.service import NetworkService
from site_agent.quarantine import Quarantine
from site_agent.vms.lifecycle import VmManager
from site_agent.volumes.service import VolumeService

CONFIG = web.AppKey("config", SiteConfig)
ENGINE = web.AppKey("engine", Engine)
VM_MANAGER = web.AppKey("vm_manager", VmManager)
HOSTS = web.AppKey("hosts", HostPool)
#: The image cache: ``ensure_cached(name) -> BootImage`` for VMs and volumes (docs/images.md).
IMAGES = web.AppKey("images", ImageCache)
#: Optional transport for image downloads (tests inject one; unset in production).
IMAGE_HTTP_TRANSPORT = web.AppKey("image_http_transport", httpx.AsyncBaseTransport)
QUARANTINE = web.AppKey("quarantine", Quarantine)
LAYOUT = web.AppKey("layout", StateLayout)
#: Address pools and leases (docs/networking.md).
NETWORKS = web.AppKey("networks", NetworkService)
#: Persistent volumes (docs/storage.md).
VOLUMES = web.AppKey("volumes", VolumeService)
