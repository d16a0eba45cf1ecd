"""Typed application keys for the site agent's shared resources."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.engine import Engine

from site_agent.config import SiteConfig
from site_agent.host_pool import HostPool
from site_agent.images.catalog import ImageCatalog
from site_agent.layout import StateLayout
from site_agent.quarantine import Quarantine
from site_agent.vms.lifecycle import VmManager

CONFIG = web.AppKey("config", SiteConfig)
ENGINE = web.AppKey("engine", Engine)
VM_MANAGER = web.AppKey("vm_manager", VmManager)
HOSTS = web.AppKey("hosts", HostPool)
IMAGES = web.AppKey("images", ImageCatalog)
QUARANTINE = web.AppKey("quarantine", Quarantine)
LAYOUT = web.AppKey("layout", StateLayout)
