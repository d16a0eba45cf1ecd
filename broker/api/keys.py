"""Typed application keys for the broker's shared resources."""

from __future__ import annotations

from aiohttp import web

from auth.cadir import TrustStore
from broker.config import BrokerConfig
from broker.networks import NetworkService
from broker.service import Broker
from broker.volumes import VolumeService

CONFIG = web.AppKey("broker_config", BrokerConfig)
BROKER = web.AppKey("broker", Broker)
SITE_TRUST = web.AppKey("site_trust", TrustStore)
VOLUMES = web.AppKey("broker_volumes", VolumeService)
NETWORKS = web.AppKey("broker_networks", NetworkService)
